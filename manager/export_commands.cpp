// `nbdxm export create|list|show|revoke` and `nbdxm gc`. The CLI talks to the manager only through the store: it
// records or revokes exports (the manager notices within its poll interval), learns from the export_manager row
// whether a manager runs and where its servers listen, and watches the export's status and the manager's records of
// its servers.
#include <fmt/chrono.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <ctime>
#include <map>
#include <memory>
#include <set>
#include <thread>

#include "command_store.hpp"
#include "commands.hpp"
#include "export_progress.hpp"
#include "nbd_handshake.hpp"
#include "nbdxm/client_allowlist.hpp"
#include "nbdxm/database.hpp"
#include "nbdxm/device_resolver.hpp"
#include "nbdxm/error.hpp"
#include "nbdxm/export_counters.hpp"
#include "nbdxm/export_store.hpp"
#include "nbdxm/port_allocator.hpp"
#include "nbdxm/printable.hpp"
#include "nbdxm/process_identity.hpp"
#include "nbdxm/store_values.hpp"
#include "output.hpp"
#include "supervision/server_command.hpp"

namespace nbdxm::cli {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr auto kStatusPoll = 2ms;  // PRAGMA data_version is a shared-memory read

const std::vector<std::string> kListColumns{
    "export_name", "port",       "status",           "job_id",          "disk_id",       "volume_uuid", "device_path",
    "connections", "supervisor", "progress_percent", "write_mib_per_s", "last_write_at", "created_at"};

constexpr double kMaxTimeoutSeconds = 86400;
constexpr int64_t kMaxRetentionSeconds = int64_t{36500} * 86400;  // 100 years: far beyond any retention, no overflow

// --timeout as a duration; refuses what is not a number of seconds in (0, one day] (NaN, infinity and values
// beyond the range of the conversion included).
std::chrono::milliseconds timeout_of(double seconds) {
  if (!(seconds > 0 && seconds <= kMaxTimeoutSeconds)) {
    throw Error(ExitCode::usage, fmt::format("--timeout {} is not valid; give seconds greater than 0 and at most {} "
                                             "(one day)",
                                             seconds, kMaxTimeoutSeconds));
  }
  return std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
}

// Parses --older-than: 30s, 15m, 24h, 7d (or a bare number of seconds), from 0 to 36500 days.
std::chrono::seconds parse_duration(const std::string& text) {
  int64_t value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  const std::string_view unit(end, static_cast<size_t>(text.data() + text.size() - end));
  const std::map<std::string_view, int64_t> units{{"", 1}, {"s", 1}, {"m", 60}, {"h", 3600}, {"d", 86400}};
  const auto found = units.find(unit);
  if (ec != std::errc() || value < 0 || found == units.end() || value > kMaxRetentionSeconds / found->second) {
    throw Error(ExitCode::usage, fmt::format("--older-than '{}' is not valid; give a number with s, m, h or d from 0s "
                                             "to {}d, e.g. 7d or 12h",
                                             text, kMaxRetentionSeconds / 86400));
  }
  return std::chrono::seconds(value * found->second);
}

// The server facts of one export: who runs its server while one runs (the manager's record), and its open
// connections (the kernel's socket table).
struct ServerFacts {
  Json supervisor = nullptr;
  Json unit = nullptr;
  Json connections = nullptr;
};

// Looks servers up for many exports: the TCP socket table is read once, and only if some server runs.
class ServerFactsReader {
 public:
  explicit ServerFactsReader(ExportStore& store) {
    for (auto& s : store.list_export_servers()) servers_.emplace(s.export_id, std::move(s));
  }
  ServerFacts facts(const NbdExport& e) {
    ServerFacts facts;
    const auto record = servers_.find(e.id);
    if (!e.live() || record == servers_.end() || !record->second.running()) return facts;
    facts.supervisor = *record->second.supervisor;
    if (record->second.unit) facts.unit = *record->second.unit;
    if (e.transport == "shared") return facts;  // one server for every shared export: not counted per export
    if (e.transport == "unix") {
      facts.connections = unix_socket_connections(record->second.listen_address.value_or(""));
      return facts;
    }
    if (!sockets_) sockets_ = TcpSocketTable::read();
    facts.connections = sockets_->connection_inodes(e.port).size();
    return facts;
  }
  ExportServer record(int64_t export_id) const {
    const auto found = servers_.find(export_id);
    return found == servers_.end() ? ExportServer{} : found->second;
  }

 private:
  std::map<int64_t, ExportServer> servers_;
  std::optional<TcpSocketTable> sockets_;
};

Json optional_json(const std::optional<std::string>& value) { return value ? Json(*value) : Json(nullptr); }

// The key file of a TLS export's life (empty for an export without TLS). Its place follows from the store's path,
// the way the manager derives it.
std::string tls_psk_file(const GlobalOptions& options, const NbdExport& e) {
  if (!e.tls) return {};
  return supervision::tls_psk_path(supervision::canonical_db_path(options.db),
                                   {e.id, e.export_name, e.port, e.created_at, "", ""});
}

// Where a live export's server listens, from where the manager recorded it listening (its listen address, or a
// unix export's socket path); nullopt while none is recorded.
// A shared export's listener is the shared server's: ADDR:PORT ([ADDR]:PORT for IPv6) or a socket path.
std::optional<NbdEndpoint> endpoint_of(const NbdExport& e, const std::optional<std::string>& listener) {
  if (!e.live() || !listener) return std::nullopt;
  if (e.transport == "unix" || (e.transport == "shared" && listener->starts_with("/"))) {
    return NbdEndpoint{"", 0, *listener};
  }
  if (e.transport == "tcp") return NbdEndpoint{*listener, e.port, ""};
  const auto colon = listener->rfind(':');
  std::string address = listener->substr(0, colon);
  if (address.starts_with("[")) address = address.substr(1, address.size() - 2);
  int port = 0;
  std::from_chars(listener->data() + colon + 1, listener->data() + listener->size(), port);
  return NbdEndpoint{address, port, ""};
}

// Where and how clients reach the export.
void add_access(Json& object, const GlobalOptions& options, const NbdExport& e,
                const std::optional<std::string>& listener) {
  const std::string key = tls_psk_file(options, e);
  const auto endpoint = endpoint_of(e, listener);
  object["transport"] = e.transport;
  object["port"] = e.transport == "tcp" ? Json(e.port) : Json(nullptr);
  object["socket"] = endpoint && !endpoint->socket.empty() ? Json(endpoint->socket) : Json(nullptr);
  object["tls"] = e.tls;
  object["tls_psk_file"] = key.empty() ? Json(nullptr) : Json(key);
  object["allow_from"] = optional_json(e.allowed_clients());
  object["uri"] = endpoint ? Json(nbd_uri(*endpoint, e.export_name, key)) : Json(nullptr);
}

// ---- create -------------------------------------------------------------------------------------------------------

struct CreateArgs {
  std::string job_id;
  std::string disk_id;
  std::optional<std::string> name;
  std::optional<int> port;
  bool tls = false;
  CLI::Option* tls_option = nullptr;  // given (--tls or --no-tls), or the manager's default
  std::optional<std::string> allow_from;
  std::optional<std::string> durability;  // default: the manager's (`serve --durability`)
  std::optional<std::string> transport;   // tcp or unix; default: the manager's (`serve --transport`)
  bool shared = false;                    // reachable on the manager's shared listener, by name
  double timeout = 10;
};

// Why the server refused the export, found the way the plugin checks it (with the manager's rules).
std::string refusal_reason(const NbdExport& e, const ManagerInstance& manager) {
  DeviceRules rules;
  rules.allow_regular_files = manager.allow_regular_files;
  rules.byid_dir = manager.byid_dir;
  try {
    DeviceResolver(rules).open(e, true);
  } catch (const std::exception& refusal) {
    return refusal.what();
  }
  return "its server refused it (the reason is in the system log, from nbdkit)";
}

[[noreturn]] void fail_created(CommandStore& store, const NbdExport& e, const std::string& reason,
                               const std::string& fix) {
  store.exports.fail_export(e.id, reason);
  throw Error(ExitCode::unavailable, fmt::format("export {} cannot be served: {}; {}", e.export_name, reason, fix));
}

// Waits until the manager's server for the export answers an NBD handshake. On any way of not getting there the
// export is left failed (not live: its port is free) and Error(unavailable) says why.
// Whether the CLI can ask the export's server as a client would: it must be able to read a TLS export's key, and be
// a client an allowlist admits, which it cannot know (its source address is the kernel's choice). When it cannot,
// the manager's word (the export active: its server is up on the port) is taken.
bool can_handshake(const NbdExport& e, const std::string& key) {
  return !e.allowed_clients() && (key.empty() || ::access(key.c_str(), R_OK) == 0);
}

// Where the manager's server of the export listens: its listen address, or a unix export's socket.
std::string listener_of(const NbdExport& e, const ManagerInstance& manager) {
  if (e.transport == "unix") return supervision::unix_socket_path(manager.run_dir, e.export_name);
  if (e.transport == "shared") return manager.shared_listener.value_or("");
  return manager.listen_address;
}

// The transport `export create` asks for; throws Error(usage) for a combination the transport cannot hold.
std::string transport_of(const CreateArgs& args, const ManagerInstance& manager, bool tls) {
  if (!args.shared) return args.transport.value_or(manager.transport_default);
  if (args.transport) {
    throw Error(ExitCode::usage, fmt::format("--shared and --transport {} name two transports; give one of them",
                                             printable(*args.transport)));
  }
  if (tls) {
    throw Error(ExitCode::usage,
                fmt::format("--shared cannot be used with TLS{}: one server serves every shared export, and nbdkit "
                            "1.32 does not tell it which pre-shared key a client used, so it cannot hold each export "
                            "to its own key; use --transport tcp or unix for a TLS export, or --no-tls",
                            args.tls_option != nullptr && args.tls_option->count() > 0
                                ? ""
                                : " (the manager's default, `serve --tls require`)"));
  }
  if (args.allow_from) {
    throw Error(ExitCode::usage,
                "--shared cannot be used with --allow-from: the shared server checks a client before "
                "it names an export; use --transport tcp or unix for an export with an allowlist");
  }
  if (!manager.shared_listener) {
    throw Error(ExitCode::unavailable,
                "--shared: the running manager has no shared listener; start it with "
                "`nbdxm serve --shared-listener 127.0.0.1:10809` (or --shared-socket PATH)");
  }
  return "shared";
}

// The allowlist of --allow-from for the transport, canonical; throws Error(usage) when its kind is not the
// transport's (addresses for tcp, uid/gid rules for unix).
std::optional<std::string> allowlist_for(const std::optional<std::string>& given, const std::string& transport) {
  if (!given) return std::nullopt;
  const ClientAllowlist list = ClientAllowlist::parse(*given);
  if (transport == "unix" && !list.for_unix_peers()) {
    throw Error(ExitCode::usage, fmt::format("--allow-from {} lists addresses, which a unix export has no use for; "
                                             "give uid:N or gid:N rules (numbers or names), e.g. gid:nbdxm-clients",
                                             printable(*given)));
  }
  if (transport != "unix" && list.for_unix_peers()) {
    throw Error(ExitCode::usage, fmt::format("--allow-from {} lists uid/gid rules, which only a unix export can "
                                             "check; give addresses for a {} export, or use --transport unix",
                                             printable(*given), transport));
  }
  return list.str();
}

NbdExport wait_until_served(CommandStore& store, const NbdExport& created, const ManagerInstance& manager,
                            const std::string& key, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  int64_t seen_version = -1;
  std::string last_handshake_error;
  for (;;) {
    const int64_t version = store.db.data_version();
    if (version != seen_version) {
      seen_version = version;
      const auto now = store.exports.find_export(created.export_name);
      if (!now || now->id != created.id) {
        throw Error(ExitCode::unavailable, fmt::format("export {} was deleted while its server was starting (its job, "
                                                       "disk or volume was deleted)",
                                                       created.export_name));
      }
      if (now->status == "failed" || now->status == "revoked") {
        throw Error(ExitCode::unavailable,
                    fmt::format("export {} {} while its server was starting: {}; see `nbdxm export show {}`",
                                created.export_name, now->status == "failed" ? "failed" : "was revoked",
                                now->status_reason.value_or("no reason recorded"), created.export_name));
      }
      if (now->status == "active") {
        if (!can_handshake(*now, key)) return *now;
        const auto handshake = nbd_handshake(*endpoint_of(*now, listener_of(*now, manager)), now->export_name, key);
        if (handshake.ok) return *now;
        if (handshake.refused) {
          fail_created(store, *now, refusal_reason(*now, manager),
                       "fix the volume's device or mapping, then create the export again");
        }
        last_handshake_error = handshake.message;
        seen_version = -1;  // ask again on the next round
      }
    }
    if (!still_running(manager.process)) {
      fail_created(store, created,
                   fmt::format("the manager (pid {}) exited before its server was up", manager.process.pid),
                   "start `nbdxm serve` (or `systemctl start nbdxm`) and create the export again");
    }
    if (Clock::now() >= deadline) {
      fail_created(
          store, created,
          fmt::format("its server did not answer within {} s{}{}", std::chrono::duration<double>(timeout).count(),
                      last_handshake_error.empty() ? "" : ": ", last_handshake_error),
          "see the manager's log (`journalctl -u nbdxm`) and create the export again");
    }
    std::this_thread::sleep_for(kStatusPoll);
  }
}

void create_command(const GlobalOptions& options, const CreateArgs& args) {
  const auto timeout = timeout_of(args.timeout);
  CommandStore store(options, Database::Access::read_write);
  const auto manager = store.exports.running_manager(still_running);
  if (!manager) {
    throw Error(ExitCode::unavailable,
                fmt::format("no manager is running for store {}; start it with `nbdxm serve` (or `systemctl start "
                            "nbdxm`) and create the export again",
                            options.db));
  }
  if (args.port && (*args.port < manager->port_low || *args.port > manager->port_high)) {
    throw Error(ExitCode::usage,
                fmt::format("--port {} is outside the port range {}-{} of the running manager; give a port in that "
                            "range, or leave --port out for the lowest free one",
                            *args.port, manager->port_low, manager->port_high));
  }
  const bool tls = args.tls_option != nullptr && args.tls_option->count() > 0 ? args.tls : manager->tls_default;
  const std::string transport = transport_of(args, *manager, tls);
  if (args.port && transport != "tcp") {
    throw Error(ExitCode::usage, fmt::format("--port is for tcp exports; a {} export has no port of its own (leave "
                                             "--port out, or use --transport tcp)",
                                             transport));
  }
  const std::optional<std::string> allow_from = allowlist_for(args.allow_from, transport);
  const PortAllocator ports(PortRange{manager->port_low, manager->port_high}, manager->listen_address);
  const NbdExport created = store.exports.create_export(
      {args.job_id, args.disk_id, args.name, args.port, args.durability.value_or(manager->durability), transport},
      ports, {tls, allow_from});
  const std::string key = tls_psk_file(options, created);
  const NbdExport served = wait_until_served(store, created, *manager, key, timeout);
  Json result{{"name", served.export_name},
              {"port", served.port},
              {"state", served.status},
              {"job_id", served.job_id},
              {"disk_id", served.disk_id},
              {"volume_uuid", served.volume_uuid},
              {"device_path", served.device_path},
              {"durability", served.durability}};
  add_access(result, options, served, listener_of(served, *manager));
  const std::string where = served.transport == "tcp"
                                ? fmt::format("port   {}", served.port)
                                : fmt::format("{} {}", served.transport, listener_of(served, *manager));
  std::string text =
      fmt::format("name   {}\n{}\nstate  {}\nuri    {}\n", printable(served.export_name), printable(where),
                  printable(served.status), printable(result["uri"].get<std::string>()));
  if (served.tls) text += fmt::format("tls    require, key {}\n", printable(key));
  if (served.allowed_clients()) text += fmt::format("allow  {}\n", printable(*served.allowed_clients()));
  print_result(options, result, text);
}

// ---- list, show ---------------------------------------------------------------------------------------------------

void list_command(const GlobalOptions& options, const ExportFilter& filter) {
  if (filter.status) values::require_export_status(*filter.status);
  CommandStore store(options, Database::Access::read_only);
  if (filter.job_id) store.exports.get_job(*filter.job_id);
  const auto exports = store.exports.list_exports(filter);
  ServerFactsReader servers(store.exports);
  const auto counters = counters_by_export(store.exports);
  if (options.json) {
    Json rows = Json::array();
    for (const auto& e : exports) {
      const auto facts = servers.facts(e);
      Json row = to_json(e);
      add_access(row, options, e, servers.record(e.id).listen_address);
      // The list names no key file (`export show` does): a TLS export's URI holds its path.
      row.erase("tls_psk_file");
      if (e.tls) row["uri"] = nullptr;
      row["connections"] = facts.connections;
      row["supervisor"] = facts.supervisor;
      row["unit"] = facts.unit;
      add_progress(row, counters_of(counters, e.id));
      rows.push_back(std::move(row));
    }
    print_list(options, rows, kListColumns);
    return;
  }
  // Text cells straight from the rows: with thousands of exports (revoked ones accumulate until `nbdxm gc`),
  // building JSON objects only to print them would cost more than the rest of the command.
  std::vector<std::vector<std::string>> cells;
  cells.reserve(exports.size());
  for (const auto& e : exports) {
    const auto facts = servers.facts(e);
    auto progress = progress_cells(counters_of(counters, e.id));
    cells.push_back({printable(e.export_name), e.transport == "tcp" ? std::to_string(e.port) : printable(e.transport),
                     printable(e.status), printable(e.job_id), printable(e.disk_id), printable(e.volume_uuid),
                     printable(e.device_path), text_value(facts.connections), text_value(facts.supervisor),
                     std::move(progress[0]), std::move(progress[1]), std::move(progress[2]), printable(e.created_at)});
  }
  fmt::print("{}", format_table(cells, kListColumns));
}

// The export's failed syncs (schema.sql, version 5): the open one (unacknowledged), and how many were acknowledged.
void add_durability_failures(Json& object, const std::vector<DurabilityFailure>& failures) {
  Json open = nullptr;
  int acknowledged = 0;
  for (const auto& f : failures) {
    if (f.acknowledged_at) {
      ++acknowledged;
    } else {
      open = fmt::format("{} ({} failed sync{}, last at {}; `nbdxm export acknowledge` once dealt with)", f.reason,
                         f.failures, f.failures == 1 ? "" : "s", f.last_failed_at);
    }
  }
  object["durability_failure"] = open;
  object["durability_failures_acknowledged"] = acknowledged;
}

// What the export's servers counted (its counter file, while the manager keeps it: from its first connect until
// its server is stopped for good). null when there is none.
void add_counters(Json& object, const NbdExport& e, const std::optional<std::string>& run_dir) {
  std::unique_ptr<ExportCounters> counters;
  if (run_dir) {
    try {
      counters =
          ExportCounters::open_read_only(ExportCounters::path(supervision::counters_dir(*run_dir), e.id, e.created_at));
    } catch (const std::exception&) {
      // Unreadable: shown as none (the manager logs it).
    }
  }
  const char* kinds[] = {"read", "write", "zero", "trim", "flush"};
  if (!counters) {
    for (const char* k : kinds) {
      object[fmt::format("requests_{}", k)] = nullptr;
      object[fmt::format("failed_{}", k)] = nullptr;
    }
    for (const char* k :
         {"bytes_read", "bytes_written", "bytes_zeroed", "bytes_trimmed", "connections_open", "connections_total",
          "refused_not_active", "refused_device", "last_write_at", "coverage_bytes", "coverage_percent"}) {
      object[k] = nullptr;
    }
    return;
  }
  const auto s = counters->snapshot();
  for (int k = 0; k < static_cast<int>(ExportCounters::Request::kCount); ++k) {
    object[fmt::format("requests_{}", kinds[k])] = s.requests[k].requests;
    object[fmt::format("failed_{}", kinds[k])] = s.requests[k].failed;
  }
  object["bytes_read"] = s.of(ExportCounters::Request::read).bytes;
  object["bytes_written"] = s.of(ExportCounters::Request::write).bytes;
  object["bytes_zeroed"] = s.of(ExportCounters::Request::zero).bytes;
  object["bytes_trimmed"] = s.of(ExportCounters::Request::trim).bytes;
  object["connections_open"] = s.connections_open;
  object["connections_total"] = s.connections_total;
  object["refused_not_active"] = s.refused[static_cast<int>(ExportCounters::Refusal::not_active)];
  object["refused_device"] = s.refused[static_cast<int>(ExportCounters::Refusal::device)];
  object["last_write_at"] = nullptr;
  if (s.last_write_unix_ms) {
    const std::time_t seconds = *s.last_write_unix_ms / 1000;
    std::tm utc{};
    gmtime_r(&seconds, &utc);
    object["last_write_at"] = fmt::format("{:%Y-%m-%dT%H:%M:%S}.{:03}Z", utc, *s.last_write_unix_ms % 1000);
  }
  object["coverage_bytes"] = s.coverage_bytes;
  object["coverage_percent"] = s.identity.volume_size > 0 ? static_cast<double>(s.coverage_bytes) * 100.0 /
                                                                static_cast<double>(s.identity.volume_size)
                                                          : 0.0;
}

void show_command(const GlobalOptions& options, const std::string& name) {
  CommandStore store(options, Database::Access::read_only);
  const NbdExport e = store.exports.get_export(name);
  ServerFactsReader servers(store.exports);
  const auto facts = servers.facts(e);
  Json object = to_json(e);
  const ExportServer server = servers.record(e.id);
  add_access(object, options, e, server.listen_address);
  object["supervisor"] = facts.supervisor;
  object["unit"] = facts.unit;
  object["server_started_at"] = facts.supervisor.is_null() ? Json(nullptr) : optional_json(server.started_at);
  object["connections"] = facts.connections;
  object["restart_count"] = server.restart_count;
  object["last_failure"] = optional_json(server.last_failure);
  object["last_failure_at"] = optional_json(server.last_failure_at);
  // Its server runs with settings other than the manager's: replaced at once when the change narrows access,
  // otherwise once it has no client.
  object["settings_stale"] = facts.supervisor.is_null() ? Json(nullptr) : optional_json(server.settings_stale);
  add_durability_failures(object, store.exports.durability_failures_of(e.id));
  const auto manager = store.exports.running_manager(still_running);
  add_counters(object, e, manager ? std::optional<std::string>(manager->run_dir) : std::nullopt);
  print_record(options, object);
}

// ---- acknowledge ----------------------------------------------------------------------------------------------

void acknowledge_command(const GlobalOptions& options, const std::string& name) {
  CommandStore store(options, Database::Access::read_write);
  const int count = store.exports.acknowledge_durability_failures(name);
  print_result(
      options, Json{{"export_name", name}, {"acknowledged", count}},
      count == 0 ? fmt::format("export {} has no unacknowledged durability failure; nothing changed\n", printable(name))
                 : fmt::format("acknowledged the durability failure of export {}\n", printable(name)));
}

// ---- revoke -------------------------------------------------------------------------------------------------------

struct RevokeArgs {
  std::optional<std::string> name;
  std::optional<std::string> job_id;
  std::optional<std::string> volume_uuid;
  double timeout = 10;
};

// Whether the manager still records a server for the export as revoked (not since created anew).
bool server_still_recorded(CommandStore& store, const NbdExport& e) {
  const auto server = store.exports.find_export_server(e.id);
  if (!server || !server->running()) return false;
  const auto now = store.exports.find_export(e.export_name);
  return now && now->id == e.id && now->created_at == e.created_at;
}

// Waits until the manager has recorded the server of every named export stopped (its processes gone, its
// acknowledged writes synced), or the export is gone or created anew since. An export found done is not looked at
// again (its server does not come back), so that a whole job's 1,000 exports cost one pass, not one per round.
void wait_for_servers_gone(CommandStore& store, const std::vector<NbdExport>& exports,
                           std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  size_t done = 0;  // exports[0, done) are done
  for (;;) {
    while (done < exports.size() && !server_still_recorded(store, exports[done])) ++done;
    if (done == exports.size()) return;
    const NbdExport* running = &exports[done];
    if (!store.exports.running_manager(still_running)) {
      throw Error(ExitCode::unavailable,
                  fmt::format("revoked: new connections are refused and open ones are cut off, but no manager is "
                              "running to stop the server of export {} (port {}); start `nbdxm serve` to free its port",
                              running->export_name, running->port));
    }
    if (Clock::now() >= deadline) {
      throw Error(ExitCode::unavailable,
                  fmt::format("revoked, but the server of export {} (port {}) still runs after {} s; see the "
                              "manager's log (`journalctl -u nbdxm`)",
                              running->export_name, running->port, std::chrono::duration<double>(timeout).count()));
    }
    std::this_thread::sleep_for(kStatusPoll * 5);
  }
}

void revoke_command(const GlobalOptions& options, const RevokeArgs& args) {
  const int targets = (args.name ? 1 : 0) + (args.job_id ? 1 : 0) + (args.volume_uuid ? 1 : 0);
  if (targets != 1) {
    throw Error(ExitCode::usage, "name what to revoke: one export NAME, or --job ID, or --volume UUID");
  }
  const auto timeout = timeout_of(args.timeout);
  CommandStore store(options, Database::Access::read_write);
  const auto revocations =
      store.exports.revoke_exports({args.name, args.job_id, args.volume_uuid}, "revoked with `nbdxm export revoke`");
  std::vector<NbdExport> revoked;
  Json rows = Json::array();
  std::string text;
  for (const auto& r : revocations) {
    if (r.revoked_now) revoked.push_back(r.target);
    rows.push_back(Json{{"export_name", r.target.export_name},
                        {"port", r.target.port},
                        {"status", r.target.status},
                        {"revoked_now", r.revoked_now},
                        {"status_reason", optional_json(r.target.status_reason)}});
    text +=
        r.revoked_now
            ? fmt::format("revoked export {}{}\n", printable(r.target.export_name),
                          r.target.transport == "tcp" ? fmt::format("; port {} is free", r.target.port) : "")
            : fmt::format("export {} was already {}\n", printable(r.target.export_name), printable(r.target.status));
  }
  if (revocations.empty()) text = "no exports to revoke\n";
  if (!revoked.empty()) wait_for_servers_gone(store, revoked, timeout);
  print_result(options, rows, text);
}

// ---- gc -----------------------------------------------------------------------------------------------------------

void gc_command(const GlobalOptions& options, const std::string& older_than, bool dry_run) {
  const auto age = parse_duration(older_than);
  CommandStore store(options, Database::Access::read_write);
  const auto removed = store.exports.collect_garbage(age, dry_run);
  Json rows = Json::array();
  for (const auto& e : removed) {
    rows.push_back(Json{{"export_name", e.export_name},
                        {"status", e.status},
                        {"status_reason", optional_json(e.status_reason)},
                        {"job_id", e.job_id},
                        {"disk_id", e.disk_id},
                        {"updated_at", e.updated_at}});
  }
  std::string text = removed.empty() ? "" : format_table(rows, {"export_name", "status", "job_id", "updated_at"});
  text += fmt::format("{} {} export row{} older than {}\n", dry_run ? "would delete" : "deleted", removed.size(),
                      removed.size() == 1 ? "" : "s", printable(older_than));
  print_result(options, rows, text);
}

}  // namespace

void register_export_commands(CLI::App& app, GlobalOptions& options) {
  CLI::App* group = app.add_subcommand("export", "Create, list, show and revoke the NBD exports of disks' volumes");
  group->require_subcommand(1);

  auto create = std::make_shared<CreateArgs>();
  CLI::App* c = group->add_subcommand(
      "create", "Export a disk's volume and wait until its server answers; prints name, port, state and URI");
  c->add_option("--job", create->job_id, "The job (must be running)")->required();
  c->add_option("--disk-id", create->disk_id, "The job's disk (linked to an 'oma' volume)")->required();
  c->add_option("--name", create->name, "Export name (default migration-vol-<volume uuid>)");
  c->add_option("--port", create->port, "Port of a tcp export (default: the lowest free one of the manager's range)");
  c->add_option("--transport", create->transport,
                "tcp (its own port) or unix (its own socket <run-dir>/exports/NAME.sock, mode 0660, group "
                "nbdxm-clients); default: the manager's `serve --transport`")
      ->check(CLI::IsMember({"tcp", "unix"}));
  c->add_flag("--shared", create->shared,
              "Reachable by name on the manager's shared listener (`serve --shared-listener`), with every other "
              "shared export, instead of on a listener of its own; not with TLS or --allow-from");
  create->tls_option =
      c->add_flag("--tls,!--no-tls", create->tls,
                  "Require TLS with a key of the export's own (a new random 256-bit PSK, identity the export's name, "
                  "in a 0600 file "
                  "of the service user that `export show` names); default: the manager's `serve --tls`");
  c->add_option("--allow-from", create->allow_from,
                "Only these clients may connect: for a tcp export IPv4 or IPv6 addresses or networks (CIDR), e.g. "
                "10.0.0.0/8,::1; for a unix export uid:N or gid:N (numbers or names; the client's uid or primary "
                "gid), e.g. uid:backup,gid:1001; comma-separated (enforced by the export's server; default: any "
                "client that reaches the listener)");
  c->add_option("--durability", create->durability,
                "on-close (writes synced when a connection closes) or write-through (every write durable before "
                "it is acknowledged); default: the manager's --durability")
      ->check(CLI::IsMember({"on-close", "write-through"}));
  c->add_option("--timeout", create->timeout, "Seconds to wait for the server")->capture_default_str();
  c->callback([&options, create] { create_command(options, *create); });

  auto filter = std::make_shared<ExportFilter>();
  CLI::App* l = group->add_subcommand(
      "list",
      "List exports with their device (resolved now), server, connections and progress (percent of the disk "
      "covered, write rate over the last 10 s, last write; as the manager last folded its servers' counters)");
  l->add_option("--job", filter->job_id, "Only this job's exports");
  l->add_option("--status", filter->status, "Only exports in this status: pending, active, revoked or failed");
  l->callback([&options, filter] { list_command(options, *filter); });

  auto name = std::make_shared<std::string>();
  CLI::App* s = group->add_subcommand("show", "Everything known about one export, with the last failure reason");
  s->add_option("NAME", *name, "Export name")->required();
  s->callback([&options, name] { show_command(options, *name); });

  auto revoke = std::make_shared<RevokeArgs>();
  CLI::App* r = group->add_subcommand(
      "revoke",
      "Stop serving exports: refuse new connections, close open ones, free the port. Idempotent; returns "
      "when the servers are gone");
  r->add_option("NAME", revoke->name, "Export name");
  r->add_option("--job", revoke->job_id, "Every export of this job");
  r->add_option("--volume", revoke->volume_uuid, "The export of this volume (UUID)");
  r->add_option("--timeout", revoke->timeout, "Seconds to wait for the servers to stop")->capture_default_str();
  r->callback([&options, revoke] { revoke_command(options, *revoke); });

  register_export_watch(*group, options);

  auto acknowledged = std::make_shared<std::string>();
  CLI::App* a = group->add_subcommand(
      "acknowledge",
      "Acknowledge the export's failed syncs (acknowledged writes may have been lost): `nbdxm check` stops reporting "
      "them. The export stays failed; create it anew to serve the volume again");
  a->add_option("NAME", *acknowledged, "Export name")->required();
  a->callback([&options, acknowledged] { acknowledge_command(options, *acknowledged); });

  auto older_than = std::make_shared<std::string>("7d");
  auto dry_run = std::make_shared<bool>(false);
  CLI::App* g = app.add_subcommand("gc", "Delete revoked and failed export rows past retention; lists what it removed");
  g->add_option("--older-than", *older_than, "Retention, e.g. 7d, 12h, 30m, 0s")->capture_default_str();
  g->add_flag("--dry-run", *dry_run, "Only list what would be deleted");
  g->callback([&options, older_than, dry_run] { gc_command(options, *older_than, *dry_run); });
}

}  // namespace nbdxm::cli
