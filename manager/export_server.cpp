#include "export_server.hpp"

#include <fmt/format.h>

#include <charconv>
#include <filesystem>
#include <system_error>

namespace nbdxm::cli {
namespace {

constexpr std::string_view kDbKey = "db=";
constexpr std::string_view kExportKey = "export=";

std::optional<int> parse_int(std::string_view text) {
  int value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

}  // namespace

std::vector<std::string> server_argv(const ServerSettings& settings, const ServerTarget& target) {
  std::vector<std::string> argv{
      settings.nbdkit,
      "--pidfile",
      server_pid_file(settings.run_dir, target.export_id),
      "--ipaddr",
      settings.listen_address,
      "--port",
      std::to_string(target.port),
      // nbdkit 1.32 has no connection limit of its own; the limit filter refuses connections beyond it.
      "--filter=limit",
      settings.plugin,
      std::string(kDbKey) + settings.db_path,
      std::string(kExportKey) + target.export_name,
      "byid-dir=" + settings.byid_dir,
      "limit=" + std::to_string(settings.max_connections),
  };
  if (settings.allow_regular_files) argv.push_back("allow-regular-files=true");
  return argv;
}

std::string server_pid_file(const std::string& run_dir, int64_t export_id) {
  return fmt::format("{}/export-{}.pid", run_dir, export_id);
}

std::string server_log_file(const std::string& run_dir, int64_t export_id) {
  return fmt::format("{}/export-{}.log", run_dir, export_id);
}

std::optional<FoundServer> recognise_server(pid_t pid, const std::vector<std::string>& argv,
                                            const std::string& db_path) {
  if (argv.empty() || std::filesystem::path(argv[0]).filename() != "nbdkit") return std::nullopt;
  const std::string store_arg = std::string(kDbKey) + db_path;
  FoundServer found;
  bool same_store = false;
  for (size_t i = 1; i < argv.size(); ++i) {
    const std::string_view arg = argv[i];
    if (arg == store_arg) same_store = true;
    if (arg.starts_with(kExportKey)) found.export_name = arg.substr(kExportKey.size());
    if (i + 1 < argv.size() && arg == "--port") found.port = parse_int(argv[i + 1]).value_or(0);
    if (i + 1 < argv.size() && arg == "--ipaddr") found.listen_address = argv[i + 1];
  }
  if (!same_store || found.export_name.empty() || found.port == 0) return std::nullopt;
  const auto status = read_process_status(pid);
  if (!status || status->state == 'Z' || status->state == 'X') return std::nullopt;
  found.process = ProcessIdentity{pid, status->start_time, current_boot_id()};
  found.launcher = status->session == pid;
  return found;
}

std::vector<FoundServer> find_servers(const std::string& db_path) {
  std::vector<FoundServer> result;
  for (pid_t pid : list_processes()) {
    if (auto found = recognise_server(pid, read_cmdline(pid), db_path)) result.push_back(std::move(*found));
  }
  return result;
}

std::string canonical_db_path(const std::string& db_path) {
  std::error_code ec;
  auto path = std::filesystem::weakly_canonical(std::filesystem::absolute(db_path, ec), ec);
  return ec ? db_path : path.string();
}

}  // namespace nbdxm::cli
