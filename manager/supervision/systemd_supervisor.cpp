#include "systemd_supervisor.hpp"

#include <fmt/format.h>
#include <pwd.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <map>

#include "nbdxm/error.hpp"
#include "nbdxm/process_identity.hpp"
#include "serve_log.hpp"
#include "server_command.hpp"

namespace nbdxm::supervision {
namespace {

constexpr const char* kPrefix = "nbdxm-export@";

// The instance of a unit named nbdxm-export@INSTANCE.service or .socket (still escaped), or "".
std::string escaped_instance_of(const std::string& unit) {
  const std::string prefix = kPrefix;
  const auto dot = unit.rfind('.');
  if (unit.rfind(prefix, 0) != 0 || dot == std::string::npos || dot <= prefix.size()) return "";
  return unit.substr(prefix.size(), dot - prefix.size());
}

// The device node a server's unit may open for its export's device: the node in /dev the path resolves to now,
// symbolic links followed as the plugin's open follows them (a /dev/disk/by-id link: the node it points at; the
// reconciler tells the supervisor again when that changes, since systemd resolves a path only when it sets the
// property); none for a regular file (allow-regular-files), a path outside /dev, which the plugin refuses, or a link
// udev has not made yet.
std::vector<std::string> device_nodes_for(const std::string& device) {
  const std::filesystem::path path(device);
  if (device.rfind("/dev/", 0) != 0 || path.lexically_normal() != path) return {};
  const std::string node = resolved_device(device);
  if (node.rfind("/dev/", 0) != 0) return {};
  return {node};
}

std::string describe_state(const std::string& unit, const UnitState& state) {
  return fmt::format("{} {} ({}, result {})", unit, state.active_state, state.sub_state, state.result);
}

std::string user_name() {
  const passwd* pw = ::getpwuid(::geteuid());
  return pw != nullptr ? pw->pw_name : std::to_string(::geteuid());
}

// Whether this process may manage its export units, asked of systemd as every start asks it: SetUnitProperties (the
// verb set-property, which polkit checks with the unit's name, like start and stop) without a property, which
// changes nothing. systemd does not ask polkit for a privileged caller (root). Interactive authorization is off
// (sd-bus's default), so polkit answers at once instead of waiting for a password.
void check_may_manage_units(SystemdBus& bus, const ServerSettings& settings, int first_port) {
  const auto unit =
      SystemdSupervisor::service_unit(server_instance(settings, ServerTarget{0, "", first_port, "", "", ""}));
  try {
    if (bus.load_state(unit) == "not-found") {
      throw Error(ExitCode::unavailable,
                  fmt::format("systemd supervisor: the export units nbdxm-export@.service and nbdxm-export@.socket "
                              "are not installed (systemd finds no {}); install the nbdxm package, or use "
                              "--supervisor direct",
                              unit));
    }
    bus.set_unit_properties(unit, {});
  } catch (const BusError& e) {
    std::string words = e.what();
    if (!words.empty() && words.back() == '.') words.pop_back();
    throw Error(ExitCode::unavailable,
                fmt::format("systemd supervisor: user {} may not manage its export units ({}); install the nbdxm "
                            "package's polkit rule {} (it lets user nbdxm manage the nbdxm-export@ units), or use "
                            "--supervisor direct",
                            user_name(), words, SystemdSupervisor::kPolkitRule));
  }
}

}  // namespace

SystemdSupervisor::SystemdSupervisor(ServerSettings settings, std::unique_ptr<SystemdBus> bus)
    : settings_(std::move(settings)), bus_(std::move(bus)) {
  bus_->subscribe([this](const std::string& job, const std::string&, const std::string&) { on_job_removed(job); },
                  [this](const std::string& path) { on_unit_changed(path); });
}

std::string SystemdSupervisor::escape_instance(const std::string& instance) {
  std::string out;
  for (size_t i = 0; i < instance.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(instance[i]);
    if (c == '/') {
      out += '-';
    } else if ((std::isalnum(c) != 0 || c == ':' || c == '_' || c == '.') && !(i == 0 && c == '.')) {
      out += static_cast<char>(c);
    } else {
      out += fmt::format("\\x{:02x}", c);
    }
  }
  return out;
}

std::string SystemdSupervisor::unescape_instance(const std::string& escaped) {
  std::string out;
  for (size_t i = 0; i < escaped.size(); ++i) {
    if (escaped[i] == '-') {
      out += '/';
    } else if (escaped.compare(i, 2, "\\x") == 0 && i + 3 < escaped.size() + 0 && std::isxdigit(escaped[i + 2]) &&
               std::isxdigit(escaped[i + 3])) {
      out += static_cast<char>(std::stoi(escaped.substr(i + 2, 2), nullptr, 16));
      i += 3;
    } else {
      out += escaped[i];
    }
  }
  return out;
}

std::string SystemdSupervisor::service_unit(const std::string& instance) {
  return kPrefix + escape_instance(instance) + ".service";
}

std::string SystemdSupervisor::socket_unit(const std::string& instance) {
  return kPrefix + escape_instance(instance) + ".socket";
}

std::vector<RunningServer> SystemdSupervisor::adopt() {
  // A server runs while either of its units does (the service may be between two of systemd's restarts).
  std::map<std::string, std::string> live;  // escaped instance -> service unit
  // The listing's states: a unit whose service and socket are both active is serving, known without a call per unit
  // (1,000 units adopted: thousands of round trips to systemd otherwise).
  std::map<std::string, std::pair<std::string, std::string>> states;  // escaped instance -> service's, socket's
  for (const auto& unit : bus_->list_units_by_patterns({"nbdxm-export@*.service", "nbdxm-export@*.socket"})) {
    const auto escaped = escaped_instance_of(unit.name);
    if (escaped.empty()) continue;
    auto& [service_state, socket_state] = states[escaped];
    (unit.name.ends_with(".socket") ? socket_state : service_state) = unit.active_state;
    if (unit.active_state == "inactive" || unit.active_state == "failed") continue;
    live[escaped] = kPrefix + escaped + ".service";
  }
  sync_stopped_units(live);
  std::vector<RunningServer> adopted;
  for (const auto& [escaped, service] : live) {
    const auto instance = unescape_instance(escaped);
    const auto path = server_spec_path(settings_.run_dir, instance);
    ServerSpec spec;
    try {
      spec = read_server_spec(path);
    } catch (const std::exception& e) {
      // What it serves and with which settings is unknown: it is stopped, and the export it may serve is started
      // anew once the instance is free (the reconciler serves every live export).
      cli::log_event("unit {} runs without a readable spec ({}): stopping it", service, e.what());
      auto server = make_server();
      server->instance = instance;
      server->unknown = true;
      begin_stop(*server, Clock::now());
      servers_.push_back(std::move(server));
      continue;
    }
    if (spec.settings.db_path != settings_.db_path) continue;  // another store's server
    auto server = make_server();
    server->target = spec.target;
    server->instance = instance;
    server->phase = Phase::adopted;
    server->listed_serving = states[escaped] == std::pair<std::string, std::string>{"active", "active"};
    servers_.push_back(std::move(server));
    adopted.push_back(RunningServer{spec.target, spec.settings, service, spec.device});
  }
  return adopted;
}

std::unique_ptr<SystemdSupervisor::Server> SystemdSupervisor::make_server() {
  auto server = std::make_unique<Server>();
  server->id = next_id_++;
  return server;
}

SystemdSupervisor::Server* SystemdSupervisor::find(const ServerTarget& target, bool or_stopping) {
  Server* stopping = nullptr;
  for (auto& s : servers_) {
    if (!(s->target == target)) continue;
    if (s->phase != Phase::stopping) return s.get();
    if (or_stopping && stopping == nullptr) stopping = s.get();
  }
  return stopping;
}

bool SystemdSupervisor::instance_held(const std::string& instance, const Server* besides) const {
  return std::any_of(servers_.begin(), servers_.end(), [&](const auto& s) {
    // A server given up on holds nothing: its units have ended, and those still up are stopped by its stop().
    return s.get() != besides && s->phase != Phase::waiting && s->phase != Phase::failed &&
           (s->instance == instance || (s->start_after_stop && s->next_instance == instance));
  });
}

void SystemdSupervisor::serve(const ServerTarget& target, Clock::time_point now) {
  wake_ = true;
  if (Server* s = find(target)) {
    if (s->phase == Phase::adopted && s->listed_serving) {
      // Serving, as listed; its restarts so far are read side by side, and its state is evaluated only after (calls).
      s->phase = Phase::serving;
      event(ServerEvent::Kind::serving, *s, "");
      read_restarts(*s);
    } else if (s->phase == Phase::adopted) {
      s->phase = Phase::starting;  // its state decides: serving if active, started again otherwise
      s->dirty = true;
    }
    return;
  }
  auto server = make_server();
  server->target = target;
  server->instance = server_instance(settings_, target);
  server->phase = Phase::waiting;
  Server& s = *server;
  servers_.push_back(std::move(server));
  if (!instance_held(s.instance, &s)) begin_start(s, now);
}

void SystemdSupervisor::begin_start(Server& server, Clock::time_point now) {
  const auto service = service_unit(server.instance);
  const auto socket = socket_unit(server.instance);
  server.phase = Phase::starting;
  server.retry = Action::none;
  try {
    for (const auto& unit : {socket, service}) {
      if (bus_->active_state(unit) == "failed") bus_->reset_failed_unit(unit);
    }
    std::vector<UnitProperty> properties{
        {"Description",
         fmt::format("nbdxm export {} ({})", server.target.export_name, listener_of(server.target)),
         0,
         true,
         false,
         {}}};
    if (settings_.tasks_max > 0) properties.push_back({"TasksMax", "", settings_.tasks_max, false, false, {}});
    if (settings_.memory_max > 0) properties.push_back({"MemoryMax", "", settings_.memory_max, false, false, {}});
    for (auto& p : device_allow(server)) properties.push_back(std::move(p));
    bus_->set_unit_properties(service, properties);
    server.jobs.push_back(server.restart_instead ? bus_->restart_unit(service) : bus_->start_unit(service));
    server.restart_instead = false;
  } catch (const BusError& e) {
    // systemd (or polkit) refused: without the units the export cannot be served.
    give_up(server, fmt::format("{} (is the package's polkit rule 50-nbdxm.rules installed, and the manager user "
                                "nbdxm?)",
                                e.what()));
  }
  (void)now;
}

void SystemdSupervisor::stop(const ServerTarget& target, Clock::time_point now) {
  wake_ = true;
  // A server stopping to start under another instance (replace) is found too: its stop is under way, and
  // `stopped` must wait for its end (and the device sync after it), not be reported before.
  Server* s = find(target, true);
  if (s == nullptr) {
    events_.push_back(ServerEvent{ServerEvent::Kind::stopped, target, "", ""});
    return;
  }
  if (s->phase == Phase::waiting) {  // never started
    event(ServerEvent::Kind::stopped, *s, "");
    forget(*s);
    return;
  }
  const bool stop_under_way = s->phase == Phase::stopping;
  s->start_after_stop = false;
  if (!stop_under_way) begin_stop(*s, now);
}

void SystemdSupervisor::begin_stop(Server& server, Clock::time_point now) {
  server.phase = Phase::stopping;
  server.retry = Action::none;
  server.service_stopped = false;
  // Through the socket: a client connecting meanwhile must not start the server again. Stopping the socket stops
  // the service first, in the same transaction (PartOf=, After=); one call, so one polkit check, keeps the stop
  // short. Its state is not read first: a service running without its socket (stopped by someone else) is stopped
  // itself once the socket's stop is done (evaluate_stopping).
  send_stop(server, socket_unit(server.instance), now);
}

void SystemdSupervisor::send_stop(Server& server, const std::string& unit, Clock::time_point now) {
  ++server.calls;
  queued_stops_.emplace_back(server.id, unit);
  send_queued_stops(now);
}

void SystemdSupervisor::send_queued_stops(Clock::time_point now) {
  while (stops_in_flight_ < kStopCallsInFlight && !queued_stops_.empty()) {
    const auto [id, unit] = queued_stops_.front();
    queued_stops_.pop_front();
    Server* server = by_id(id);
    if (server == nullptr) continue;
    try {
      bus_->stop_unit_async(
          unit, [this, id = id](const std::string& job, const BusError* error) { on_stop_reply(id, job, error); });
      ++stops_in_flight_;
    } catch (const BusError& e) {
      --server->calls;
      retry_stop(*server, e, now);
    }
  }
}

SystemdSupervisor::Server* SystemdSupervisor::by_id(uint64_t id) {
  const auto it = std::find_if(servers_.begin(), servers_.end(), [&](const auto& s) { return s->id == id; });
  return it == servers_.end() ? nullptr : it->get();
}

void SystemdSupervisor::on_stop_reply(uint64_t id, const std::string& job, const BusError* error) {
  --stops_in_flight_;
  const auto now = Clock::now();
  if (Server* server = by_id(id)) {
    --server->calls;
    if (error != nullptr) {
      retry_stop(*server, *error, now);
    } else {
      server->jobs.push_back(job);  // its JobRemoved comes after this reply
    }
  }
  send_queued_stops(now);
}

void SystemdSupervisor::retry_stop(Server& server, const BusError& error, Clock::time_point now) {
  cli::log_event("{}: cannot stop its units yet ({}); trying again in {} s", server.target.export_name, error.what(),
                 kRetryAfter.count());
  server.retry = Action::stop;
  server.retry_at = now + kRetryAfter;
}

void SystemdSupervisor::read_restarts(Server& server) {
  ++server.calls;
  queued_reads_.emplace_back(server.id, service_unit(server.instance));
  send_queued_reads();
}

void SystemdSupervisor::send_queued_reads() {
  while (reads_in_flight_ < kReadsInFlight && !queued_reads_.empty()) {
    const auto [id, unit] = queued_reads_.front();
    queued_reads_.pop_front();
    if (by_id(id) == nullptr) continue;
    try {
      bus_->service_restarts_async(
          unit, [this, id = id](uint32_t restarts, const BusError* error) { on_restarts_reply(id, restarts, error); });
      ++reads_in_flight_;
    } catch (const BusError& e) {
      ++reads_in_flight_;  // on_restarts_reply counts it back
      on_restarts_reply(id, 0, &e);
    }
  }
}

void SystemdSupervisor::on_restarts_reply(uint64_t id, uint32_t restarts, const BusError* error) {
  --reads_in_flight_;
  if (Server* server = by_id(id)) {
    --server->calls;
    if (error != nullptr) {
      cli::log_event("{}: {}; its restarts are counted from its next change on", server->target.export_name,
                     error->what());
      server->restarts_unknown = true;
    } else {
      server->restarts = restarts;
    }
  }
  send_queued_reads();
}

void SystemdSupervisor::replace(const ServerTarget& target, Clock::time_point now) {
  wake_ = true;
  Server* s = find(target);
  if (s == nullptr) return serve(target, now);
  const auto wanted = server_instance(settings_, target);
  if (wanted == s->instance) {
    // The socket stays: its port stays bound, and clients connecting meanwhile wait in its backlog.
    s->restart_instead = true;
    begin_start(*s, now);
    return;
  }
  s->start_after_stop = true;
  s->next_instance = wanted;
  begin_stop(*s, now);
}

void SystemdSupervisor::device_changed(const ServerTarget& target, Clock::time_point now) {
  Server* s = find(target);
  // A server not started yet reads its device when it starts; one stopping or given up on serves nothing more.
  if (s == nullptr || s->phase == Phase::waiting || s->phase == Phase::failed) return;
  s->device_retry = false;
  try {
    bus_->set_unit_properties(service_unit(s->instance), device_allow(*s));
  } catch (const BusError& e) {
    // The unit still allows the export's former device (the plugin no longer opens it: the store names the new one)
    // and not the new one: connects are refused until this is done.
    cli::log_event("{}: cannot allow its server only its new device yet ({}); trying again in {} s",
                   s->target.export_name, e.what(), kRetryAfter.count());
    s->device_retry = true;
    s->retry_at = now + kRetryAfter;
  }
}

// DeviceAllow= of the server's unit: its spec's current device alone (every device of the spec for a spec without a
// current one: the shared server's). The empty list first empties the unit's list (systemd adds a property's entries
// to the list it has), here and in the unit's runtime drop-in.
std::vector<UnitProperty> SystemdSupervisor::device_allow(const Server& server) const {
  std::vector<std::string> devices;
  try {
    const ServerSpec spec = read_server_spec(server_spec_path(settings_.run_dir, server.instance));
    devices = spec.device.empty() ? spec.devices : std::vector<std::string>{spec.device};
  } catch (const std::exception& e) {
    cli::log_event("{}: its spec cannot be read ({}); its server may open no device", server.target.export_name,
                   e.what());
  }
  std::vector<UnitProperty> properties{{"DeviceAllow", "", 0, false, true, {}}};
  std::vector<std::string> nodes;
  for (const auto& device : devices) {
    for (auto& node : device_nodes_for(device)) nodes.push_back(std::move(node));
  }
  if (!nodes.empty()) properties.push_back({"DeviceAllow", "", 0, false, true, nodes});
  return properties;
}

// A unit stopped while no manager ran (by an operator, systemd giving up after the manager died) left what its server
// acknowledged in the page cache: every device of its spec is synced here, at the start, side by side, as the
// manager syncs them after each stop it sees. The spec of a stopped unit serves nothing: once synced it goes (the
// reconciler writes a new one for a live export it serves); a spec whose sync failed stays, to be tried again at the
// next start (the failure is the export's, recorded in its counter file).
void SystemdSupervisor::sync_stopped_units(const std::map<std::string, std::string>& live) const {
  std::vector<std::string> paths;
  std::error_code ec;
  const std::filesystem::path dir = server_spec_dir(settings_.run_dir);
  // Recursive: a Unix-socket export's instance is its socket's path, so its spec is DIR//run/.../NAME.sock.json.
  for (std::filesystem::recursive_directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const auto& file = it->path();
    if (file.extension() != ".json" || !it->is_regular_file(ec)) continue;
    std::string instance = file.lexically_relative(dir).replace_extension().string();
    if (instance.find('/') != std::string::npos) instance = "/" + instance;
    if (live.contains(escape_instance(instance))) continue;
    try {
      if (read_server_spec(file.string()).settings.db_path != settings_.db_path) continue;  // another store's
    } catch (const std::exception& e) {
      cli::log_event("server spec {} of a stopped unit cannot be read ({}): its devices are not synced", file.string(),
                     e.what());
      continue;
    }
    paths.push_back(file.string());
  }
  if (paths.empty()) return;
  const auto synced = sync_spec_files(paths);
  const auto done = static_cast<size_t>(std::count(synced.begin(), synced.end(), true));
  for (size_t k = 0; k < paths.size(); ++k) {
    if (synced[k]) std::filesystem::remove(paths[k], ec);
  }
  cli::log_event("synced the devices of {} of {} export unit(s) stopped while no manager ran", done, paths.size());
}

int SystemdSupervisor::clients(const ServerTarget& target) const { return server_clients(target); }

void SystemdSupervisor::collect_fds(std::vector<pollfd>& fds) { fds.push_back(pollfd{bus_->fd(), bus_->events(), 0}); }

SystemdSupervisor::Clock::time_point SystemdSupervisor::next_deadline() const {
  if (wake_ || !events_.empty()) return Clock::time_point::min();
  auto deadline = bus_->deadline();
  for (const auto& s : servers_) {
    if (s->dirty) return Clock::time_point::min();
    deadline = std::min(deadline, s->retry_at);
  }
  return deadline;
}

std::vector<ServerEvent> SystemdSupervisor::advance(Clock::time_point now) {
  wake_ = false;
  try {
    bus_->process();
  } catch (const BusError& e) {
    // The connection is lost: its fd stays readable, so going on would spin, and no signal would come again. The
    // manager exits (its unit's Restart=on-failure starts it again, and the new one adopts the units).
    cli::log_event("systemd's signals: {}; exiting", e.what());
    throw;
  }
  // evaluate() may forget servers: iterate over a snapshot.
  std::vector<Server*> snapshot;
  for (auto& s : servers_) snapshot.push_back(s.get());
  for (Server* s : snapshot) {
    if (now >= s->retry_at) {
      s->retry_at = Clock::time_point::max();
      if (s->device_retry) device_changed(s->target, now);
      if (s->retry == Action::stop) {
        begin_stop(*s, now);
      } else {
        s->dirty = true;
      }
    }
    if (s->dirty && s->jobs.empty() && s->calls == 0) evaluate(*s, now);
  }
  // A server waiting for its instance starts once the instance is free.
  for (auto& s : servers_) {
    if (s->phase == Phase::waiting && !instance_held(s->instance, s.get())) begin_start(*s, now);
  }
  report_stops();
  return std::exchange(events_, {});
}

void SystemdSupervisor::on_job_removed(const std::string& job) {
  for (auto& s : servers_) {
    const auto it = std::find(s->jobs.begin(), s->jobs.end(), job);
    if (it != s->jobs.end()) {
      s->jobs.erase(it);
      s->dirty = true;
    }
  }
}

// Every unit's change on the system comes here, several for each export unit that starts or stops: the unit is named
// once per signal, and each server compared by its instance, without building any string per server.
void SystemdSupervisor::on_unit_changed(const std::string& unit_path) {
  const std::string escaped = escaped_instance_of(SystemdBus::unit_of_path(unit_path));
  if (escaped.empty()) return;  // not an export unit
  const std::string instance = unescape_instance(escaped);
  for (auto& s : servers_) {
    if (s->phase == Phase::waiting || s->phase == Phase::adopted) continue;
    if (s->instance == instance) s->dirty = true;
  }
}

void SystemdSupervisor::evaluate(Server& server, Clock::time_point now) {
  server.dirty = false;
  const auto service_name = service_unit(server.instance);
  const auto socket_name = socket_unit(server.instance);
  try {
    if (server.phase == Phase::stopping) {  // the hot path of revoke: the fewest calls
      evaluate_stopping(server, UnitState{bus_->active_state(service_name), "", ""},
                        UnitState{bus_->active_state(socket_name), "", ""}, now);
      return;
    }
    const auto service = bus_->unit_state(service_name);
    const auto socket = bus_->unit_state(socket_name);
    switch (server.phase) {
      case Phase::starting:
        evaluate_starting(server, service, socket);
        break;
      case Phase::serving:
        evaluate_serving(server, service, socket);
        break;
      case Phase::stopping:
        evaluate_stopping(server, service, socket, now);
        break;
      case Phase::adopted:
      case Phase::waiting:
      case Phase::failed:
        break;
    }
  } catch (const BusError& e) {
    cli::log_event("{}: cannot read the state of its units ({}); trying again in {} s", server.target.export_name,
                   e.what(), kRetryAfter.count());
    server.retry_at = now + kRetryAfter;
  }
}

void SystemdSupervisor::evaluate_starting(Server& server, const UnitState& service, const UnitState& socket) {
  const auto service_name = service_unit(server.instance);
  if (service.active_state == "active") {
    server.phase = Phase::serving;
    server.restarts = bus_->service_restarts(service_name);
    event(ServerEvent::Kind::serving, server, "");
    return;
  }
  if (socket.active_state == "failed" && socket.result == "resources") {
    // systemd could not bind the port: another program holds it. The export moves to another port; this instance
    // is left clean for whoever gets the port next.
    bus_->reset_failed_unit(socket_unit(server.instance));
    if (service.active_state == "failed") bus_->reset_failed_unit(service_name);
    event(ServerEvent::Kind::port_unavailable, server,
          fmt::format("systemd cannot bind {} (socket unit {} failed with result resources: address in use)",
                      server.instance, socket_unit(server.instance)));
    remove_spec(server.instance, server.target);  // no server ran from it: the export moves to another port
    forget(server);
    return;
  }
  if (!service.active_or_busy() || !socket.active_or_busy()) {
    give_up(server, fmt::format("{} did not start: {}; {}; see journalctl -u {}", service_name,
                                describe_state(service_name, service),
                                describe_state(socket_unit(server.instance), socket), service_name));
  }
  // activating, or between two of systemd's restarts: the next signal tells.
}

void SystemdSupervisor::evaluate_serving(Server& server, const UnitState& service, const UnitState& socket) {
  const auto service_name = service_unit(server.instance);
  if (service.sub_state == "auto-restart") server.last_exit = bus_->service_exit(service_name);
  const auto restarts = bus_->service_restarts(service_name);
  if (server.restarts_unknown) {
    server.restarts_unknown = false;
    server.restarts = restarts;
  } else if (restarts > server.restarts) {
    server.restarts = restarts;
    event(ServerEvent::Kind::restarted, server,
          fmt::format("{} ended unexpectedly ({}) and systemd started it again (restart {})", service_name,
                      server.last_exit.empty() ? "see journalctl -u " + service_name : server.last_exit, restarts));
  }
  if (!service.active_or_busy() || !socket.active_or_busy()) {
    give_up(server,
            fmt::format("systemd gave up on {}: {}; {}{}; see journalctl -u {}", service_name,
                        describe_state(service_name, service), describe_state(socket_unit(server.instance), socket),
                        server.last_exit.empty() ? "" : "; last end: " + server.last_exit, service_name));
  }
}

// `service` and `socket` carry their active state only.
void SystemdSupervisor::evaluate_stopping(Server& server, const UnitState& service, const UnitState& socket,
                                          Clock::time_point now) {
  const auto service_name = service_unit(server.instance);
  if (!socket.active_or_busy() && service.active_or_busy() && service.active_state != "deactivating" &&
      !server.service_stopped) {
    // The service ran without its socket: the socket's stop left it running.
    server.service_stopped = true;
    return send_stop(server, service_name, now);
  }
  if (service.active_or_busy() || socket.active_or_busy()) return;  // still stopping
  std::string reason;
  if (service.active_state == "failed" && !server.gave_up) {
    // The stop itself failed (the kill did not empty the unit's cgroup in time, say): the operator must look.
    reason = fmt::format("{} stopped with result {}: see journalctl -u {}", service_name,
                         bus_->unit_state(service_name).result, service_name);
    cli::log_event("{}: {}", server.target.export_name, reason);
  }
  for (const auto& [unit, state] :
       {std::pair{service_name, service}, std::pair{socket_unit(server.instance), socket}}) {
    if (state.active_state == "failed") bus_->reset_failed_unit(unit);
  }
  if (server.start_after_stop) {
    const auto old_instance = server.instance;
    server.start_after_stop = false;
    server.instance = server.next_instance;
    sync_spec_files({server_spec_path(settings_.run_dir, old_instance)});
    remove_spec(old_instance, server.target);  // the new instance's spec is written already
    begin_start(server, now);
    return;
  }
  if (server.unknown) {  // no target to report the stop for, and no spec to sync
    cli::log_event("unit {} stopped{}", service_name, reason.empty() ? "" : ": " + reason);
    forget(server);
    return;
  }
  unsynced_.push_back(StoppedServer{server.target, server.instance, std::move(reason)});
  forget(server);
}

// The servers whose units stopped in this advance() (a whole job's, say): every device of their specs is synced, side
// by side, and only then is each stop reported. A spec may name devices of an earlier server of the instance, or be
// another target's by now (its spec merged with this one's devices): a device synced once more costs little, one
// left unsynced loses what the server acknowledged.
void SystemdSupervisor::report_stops() {
  std::vector<std::string> paths;
  for (const auto& stopped : unsynced_) paths.push_back(server_spec_path(settings_.run_dir, stopped.instance));
  std::sort(paths.begin(), paths.end());
  paths.erase(std::unique(paths.begin(), paths.end()), paths.end());
  sync_spec_files(paths);
  for (auto& stopped : unsynced_) {
    // A replace's stop turned into a plain one: the reconciler removes the spec of the target's current instance,
    // this one the spec of the instance the server ran under.
    if (stopped.instance != server_instance(settings_, stopped.target)) remove_spec(stopped.instance, stopped.target);
    events_.push_back(ServerEvent{ServerEvent::Kind::stopped, stopped.target, std::move(stopped.reason),
                                  service_unit(stopped.instance)});
  }
  unsynced_.clear();
}

void SystemdSupervisor::give_up(Server& server, const std::string& reason) {
  server.phase = Phase::failed;
  server.gave_up = true;  // its units' failure is reported: the stop that follows does not report it again
  event(ServerEvent::Kind::gave_up, server, reason);
}

void SystemdSupervisor::event(ServerEvent::Kind kind, const Server& server, std::string reason) {
  events_.push_back(ServerEvent{kind, server.target, std::move(reason), service_unit(server.instance)});
}

void SystemdSupervisor::forget(const Server& server) {
  servers_.erase(std::remove_if(servers_.begin(), servers_.end(), [&](const auto& s) { return s.get() == &server; }),
                 servers_.end());
}

void SystemdSupervisor::remove_spec(const std::string& instance, const ServerTarget& target) const {
  // Only its own: a server of another target may have taken the instance since (the reconciler writes its spec first).
  const std::string path = server_spec_path(settings_.run_dir, instance);
  try {
    if (read_server_spec(path).target == target) std::filesystem::remove(path);
  } catch (const std::exception&) {
    // None there, or not one of ours: nothing to remove.
  }
}

bool systemd_available() {
  std::error_code ec;
  return std::filesystem::is_directory("/run/systemd/system", ec) && SystemdBus::systemd_answers();
}

std::unique_ptr<ServerSupervisor> make_systemd_supervisor(const ServerSettings& settings, int first_port) {
  std::error_code ec;
  if (!std::filesystem::is_directory("/run/systemd/system", ec)) {
    throw Error(ExitCode::usage,
                "--supervisor systemd: systemd is not PID 1 here (no /run/systemd/system); use --supervisor direct");
  }
  if (std::filesystem::weakly_canonical(settings.run_dir, ec) != SystemdSupervisor::kRunDir) {
    throw Error(ExitCode::usage,
                fmt::format("--supervisor systemd needs --run-dir {} (the export units read their spec files there), "
                            "not {}; use --supervisor direct for another run directory",
                            SystemdSupervisor::kRunDir, settings.run_dir));
  }
  std::unique_ptr<SystemdBus> bus;
  try {
    bus = SystemdBus::open_system();
  } catch (const BusError& e) {
    throw Error(
        ExitCode::usage,
        fmt::format("--supervisor systemd: cannot reach systemd on the system bus ({}); use --supervisor direct",
                    e.what()));
  }
  check_may_manage_units(*bus, settings, first_port);
  try {
    return std::make_unique<SystemdSupervisor>(settings, std::move(bus));
  } catch (const BusError& e) {
    throw Error(
        ExitCode::usage,
        fmt::format("--supervisor systemd: cannot reach systemd on the system bus ({}); use --supervisor direct",
                    e.what()));
  }
}

}  // namespace nbdxm::supervision
