#include "serve_config.hpp"

#include <fmt/format.h>

#include <charconv>
#include <filesystem>
#include <system_error>

#include "metrics_server.hpp"
#include "nbdxm/error.hpp"

namespace nbdxm::cli {
namespace {

std::string absolute(const std::string& path) {
  std::error_code ec;
  auto result = std::filesystem::absolute(path, ec);
  return ec ? path : result.lexically_normal().string();
}

// Sets an option from a configuration item, as if given on the command line.
void apply_item(CLI::Option& option, const CLI::ConfigItem& item, const CLI::Config& formatter) {
  option.add_result(option.get_expected_min() == 0 ? std::vector<std::string>{formatter.to_flag(item)} : item.inputs);
  option.run_callback();
}

}  // namespace

void add_serve_options(CLI::App& serve, ServeConfig& config) {
  serve.add_option("--config", config.config_path, "Configuration file; its keys are these long options")
      ->envname("NBDXM_CONFIG")
      ->capture_default_str();
  serve.add_option("--listen", config.listen, "Address the export servers listen on")->capture_default_str();
  serve.add_option("--port-range", config.port_range, "Ports given to exports, LO-HI inclusive")->capture_default_str();
  serve
      .add_option("--run-dir", config.run_dir,
                  "Directory for the servers' spec files (servers/ADDRESS:PORT.json) and, under direct, their logs")
      ->capture_default_str();
  serve.add_option("--nbdkit", config.nbdkit, "The nbdkit program")->capture_default_str();
  serve.add_option("--plugin", config.plugin, "The nbdxm plugin: its short name or the path of its .so")
      ->capture_default_str();
  serve.add_flag("--allow-regular-files", config.allow_regular_files,
                 "Also serve volumes that are regular files (demos and tests)");
  serve.add_flag("--allow-uncorrelated", config.allow_uncorrelated,
                 "Also serve mappings that do not require device correlation (tests and demos)");
  serve.add_option("--byid-dir", config.byid_dir, "Where volume identity links are checked")->capture_default_str();
  serve.add_option("--max-connections", config.max_connections, "Connections allowed per export")
      ->capture_default_str();
  serve
      .add_option("--supervisor", config.supervisor,
                  "Who runs the export servers: systemd (each export a systemd unit, kept when the manager stops), "
                  "direct (children of the manager: exports do NOT outlive the manager; containers, CI, demos) or "
                  "auto (systemd where PID 1 is systemd)")
      ->check(CLI::IsMember({"auto", "systemd", "direct"}))
      ->capture_default_str();
  serve
      .add_option("--tls", config.tls,
                  "TLS of the exports created without --tls or --no-tls: require (each export its own pre-shared key) "
                  "or off")
      ->check(CLI::IsMember({"off", "require"}))
      ->capture_default_str();
  serve
      .add_option("--transport", config.transport,
                  "Transport of the exports created without --transport: tcp (each export its own port) or unix "
                  "(each export its own socket <run-dir>/exports/NAME.sock, mode 0660, group nbdxm-clients)")
      ->check(CLI::IsMember({"tcp", "unix"}))
      ->capture_default_str();
  serve.add_option("--shared-listener", config.shared_listener,
                   "ADDR:PORT of one server that serves, by name, every export created with --shared (for tunnels "
                   "that forward one port, e.g. 127.0.0.1:10809; it lists no names). Default: none");
  serve.add_option("--shared-socket", config.shared_socket,
                   "Or a Unix socket path for that server (mode 0660, group nbdxm-clients)");
  serve.add_option("--server-threads", config.server_threads, "nbdkit threads per export server (nbdkit -t)")
      ->capture_default_str();
  serve
      .add_option("--durability", config.durability,
                  "Default durability of new exports: on-close (a connection's writes are synced when it closes) or "
                  "write-through (every write is durable before it is acknowledged); `export create --durability` "
                  "overrides it")
      ->check(CLI::IsMember({"on-close", "write-through"}))
      ->capture_default_str();
  serve
      .add_option("--metrics-listen", config.metrics_listen,
                  "Serve Prometheus metrics (GET /metrics) on ADDRESS:PORT, e.g. 127.0.0.1:9810 or [::1]:9810 "
                  "(default: not served)")
      ->capture_default_str();
  serve.add_option("--tasks-max", config.tasks_max, "Tasks allowed per export server (systemd TasksMax=)")
      ->capture_default_str();
  serve
      .add_option("--memory-max", config.memory_max, "Memory allowed per export server, in bytes (systemd MemoryMax=)")
      ->capture_default_str();
}

std::optional<supervision::ServerTarget> ServeConfig::shared_target() const {
  supervision::ServerTarget target;
  target.export_name = supervision::kSharedServerName;
  if (!shared_socket.empty()) {
    target.socket = shared_socket;
    return target;
  }
  if (shared_listener.empty()) return std::nullopt;
  const auto colon = shared_listener.rfind(':');
  std::string address = colon == std::string::npos ? "" : shared_listener.substr(0, colon);
  if (address.size() >= 2 && address.front() == '[' && address.back() == ']')
    address = address.substr(1, address.size() - 2);
  const std::string port = colon == std::string::npos ? "" : shared_listener.substr(colon + 1);
  int number = 0;
  const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), number);
  if (address.empty() || port.empty() || ec != std::errc() || end != port.data() + port.size() || number < 1 ||
      number > 65535) {
    throw Error(ExitCode::usage, fmt::format("--shared-listener {} is not ADDR:PORT; give e.g. 127.0.0.1:10809 or "
                                             "[::1]:10809",
                                             shared_listener));
  }
  target.address = address;
  target.port = number;
  return target;
}

supervision::SupervisorKind ServeConfig::supervisor_kind() const {
  if (supervisor == "systemd") return supervision::SupervisorKind::systemd;
  if (supervisor == "direct") return supervision::SupervisorKind::direct;
  return supervision::SupervisorKind::automatic;
}

void apply_config_file(CLI::App& serve, ServeConfig& config) {
  const bool given = serve.get_option("--config")->count() > 0;
  if (config.config_path.empty()) return;
  std::error_code ec;
  if (!std::filesystem::exists(config.config_path, ec)) {
    if (!given) return;
    throw Error(ExitCode::usage, fmt::format("configuration file {} does not exist; give an existing file with "
                                             "--config, or an empty --config \"\" for none",
                                             config.config_path));
  }
  CLI::ConfigTOML formatter;
  std::vector<CLI::ConfigItem> items;
  try {
    items = formatter.from_file(config.config_path);
  } catch (const CLI::Error& e) {
    throw Error(ExitCode::usage, fmt::format("configuration file {} cannot be read: {}", config.config_path, e.what()));
  }
  CLI::App* top = serve.get_parent();
  for (const auto& item : items) {
    if (item.name == "++" || item.name == "--") continue;  // section markers
    const bool top_level = item.parents.empty();
    if (!top_level && !(item.parents.size() == 1 && item.parents[0] == serve.get_name())) {
      throw Error(ExitCode::usage, fmt::format("configuration file {}: unknown section [{}]; the keys of `nbdxm serve` "
                                               "go at the top or under [serve]",
                                               config.config_path, fmt::join(item.parents, ".")));
    }
    CLI::Option* option = item.name == "config" ? nullptr : serve.get_option_no_throw("--" + item.name);
    if (option == nullptr && top_level && top != nullptr) option = top->get_option_no_throw("--" + item.name);
    if (option == nullptr) {
      throw Error(ExitCode::usage, fmt::format("configuration file {}: unknown key '{}'; the keys are the long options "
                                               "of `nbdxm serve` without dashes (see `nbdxm serve --help`)",
                                               config.config_path, item.name));
    }
    if (option->count() > 0) continue;  // the command line (or the environment, for --db) wins
    try {
      apply_item(*option, item, formatter);
    } catch (const CLI::Error& e) {
      throw Error(ExitCode::usage,
                  fmt::format("configuration file {}: key '{}': {}", config.config_path, item.name, e.what()));
    }
  }
}

void validate(ServeConfig& config) {
  config.ports();  // throws on a malformed range
  if (config.max_connections < 1) {
    throw Error(ExitCode::usage,
                fmt::format("--max-connections {} is not valid; give 1 or more (the migration client opens 2 per "
                            "export)",
                            config.max_connections));
  }
  if (config.server_threads < 1 || config.server_threads > 1024) {
    throw Error(ExitCode::usage, fmt::format("--server-threads {} is not valid; give 1 to 1024 (nbdkit threads per "
                                             "export server)",
                                             config.server_threads));
  }
  if (config.tasks_max < 8) {
    throw Error(ExitCode::usage,
                fmt::format("--tasks-max {} is not valid; give 8 or more (an export server needs a task per nbdkit "
                            "thread and per connection)",
                            config.tasks_max));
  }
  if (config.memory_max < (uint64_t{16} << 20)) {
    throw Error(ExitCode::usage, fmt::format("--memory-max {} is not valid; give 16777216 (16 MiB) or more, in bytes",
                                             config.memory_max));
  }
  if (config.listen.empty()) throw Error(ExitCode::usage, "--listen is empty; give an address such as 127.0.0.1");
  if (!config.metrics_listen.empty()) metrics::ListenAddress::parse(config.metrics_listen);
  if (!config.shared_listener.empty() && !config.shared_socket.empty()) {
    throw Error(ExitCode::usage, "--shared-listener and --shared-socket name one shared server; give one of them");
  }
  if (!config.shared_socket.empty()) config.shared_socket = absolute(config.shared_socket);
  if (const auto shared = config.shared_target(); shared && shared->socket.empty()) {
    const PortRange range = config.ports();
    if (shared->port >= range.low && shared->port <= range.high) {
      throw Error(ExitCode::usage, fmt::format("--shared-listener port {} is inside --port-range {}, whose ports are "
                                               "the exports' own; give a port outside it (10809 is the usual one)",
                                               shared->port, range.str()));
    }
  }
  config.run_dir = absolute(config.run_dir);
  config.byid_dir = absolute(config.byid_dir);
  if (config.plugin.find('/') != std::string::npos) config.plugin = absolute(config.plugin);
  if (config.nbdkit.find('/') != std::string::npos) config.nbdkit = absolute(config.nbdkit);
}

}  // namespace nbdxm::cli
