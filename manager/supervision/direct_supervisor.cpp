#include "direct_supervisor.hpp"

#include <fmt/format.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "nbdxm/device_sync.hpp"
#include "nbdxm/error.hpp"
#include "nbdxm/port_allocator.hpp"
#include "nbdxm/process_identity.hpp"
#include "serve_log.hpp"
#include "server_command.hpp"

namespace nbdxm::supervision {
namespace {

// Whether the child has exited, without reaping it: until it is reaped its pid, which is also its process group's
// id, cannot be re-used, so that what it left in its group can still be killed safely.
bool exited(ChildProcess& child) {
  pollfd fd{child.exit_fd(), POLLIN, 0};
  return fd.fd >= 0 ? ::poll(&fd, 1, 0) > 0 : !child.running();
}

using namespace std::chrono_literals;
using cli::log_event;

std::chrono::milliseconds backoff(int failures) {
  const auto delay = 100ms * (1 << std::min(failures - 1, 6));
  return std::min<std::chrono::milliseconds>(delay, 5s);
}

std::string describe_status(int status) {
  if (WIFEXITED(status)) return fmt::format("exited with status {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    return fmt::format("was killed by signal {} ({})", WTERMSIG(status), strsignal(WTERMSIG(status)));
  }
  return "stopped";
}

// The last non-empty line of a server's log: what nbdkit or the plugin said before it failed.
std::string last_line(const std::string& path) {
  std::ifstream in(path);
  std::string line, last;
  while (std::getline(in, line)) {
    if (!line.empty()) last = line;
  }
  return last;
}

std::string log_path(const ServerSettings& settings, const ServerTarget& target) {
  return fmt::format("{}/{}.log", server_spec_dir(settings.run_dir), server_instance(settings, target));
}

// A stopped Unix-socket export's socket file: no client must find a path that nothing listens on.
void remove_unix_socket(const ServerTarget& target) {
  if (!target.socket.empty()) ::unlink(target.socket.c_str());
}

std::string describe(const ServerTarget& target) {
  return fmt::format("export {} ({})", target.export_name, listener_of(target));
}

}  // namespace

DirectSupervisor::DirectSupervisor(ServerSettings settings, std::vector<std::string> server_program)
    : settings_(std::move(settings)), server_program_(std::move(server_program)) {
  exits_.reset(::epoll_create1(EPOLL_CLOEXEC));
  if (!exits_.valid())
    throw Error(ExitCode::failure, fmt::format("direct supervisor: epoll_create1: {}", std::strerror(errno)));
}

DirectSupervisor::~DirectSupervisor() { shutdown(); }

DirectSupervisor::Server* DirectSupervisor::find(const ServerTarget& target) {
  for (auto& s : servers_) {
    if (s->target == target) return s.get();
  }
  return nullptr;
}

bool DirectSupervisor::listener_taken(const ServerTarget& target, const Server* besides) const {
  const std::string instance = server_instance(settings_, target);
  return std::any_of(servers_.begin(), servers_.end(), [&](const auto& s) {
    return s.get() != besides && s->socket.valid() && server_instance(settings_, s->target) == instance;
  });
}

void DirectSupervisor::serve(const ServerTarget& target, Clock::time_point now) {
  if (find(target) != nullptr) return;
  auto server = std::make_unique<Server>();
  server->id = next_id_++;
  server->target = target;
  std::error_code ec;
  std::filesystem::remove(log_path(settings_, target), ec);  // what an earlier server of the instance said
  Server& s = *server;
  servers_.push_back(std::move(server));
  // A server of another target still stopping on this port keeps it bound until it is gone: this one waits.
  if (!listener_taken(target, &s)) start(s, now, pending_);
}

void DirectSupervisor::start(Server& server, Clock::time_point now, std::vector<ServerEvent>& events) {
  if (!server.socket.valid() && !bind_socket(server, events)) return;
  std::string why;
  if (!spawn(server, why)) {
    server.phase = Phase::backoff;
    ++server.failures;
    server.restarting = true;
    server.last_failure = why;
    server.deadline = now + backoff(server.failures);
    log_event("{}: {}", describe(server.target), why);
    return;
  }
  server.phase = Phase::running;
  server.started = now;
  server.deadline = Clock::time_point::max();
  log_event("{}: {} server pid {} on {}", describe(server.target), server.restarting ? "restarted" : "started",
            server.child->pid(), server_instance(settings_, server.target));
  events.push_back({server.restarting ? ServerEvent::Kind::restarted : ServerEvent::Kind::serving, server.target,
                    server.restarting ? server.last_failure : "", ""});
  server.restarting = false;
}

bool DirectSupervisor::bind_socket(Server& server, std::vector<ServerEvent>& events) {
  if (!server.target.socket.empty()) return bind_unix_socket(server, events);
  int error = 0;
  try {
    server.socket = listen_on(listen_address_of(settings_, server.target), server.target.port);
    if (server.socket.valid()) return true;
    error = errno;
  } catch (const Error&) {
    error = EADDRNOTAVAIL;
  }
  const std::string why =
      fmt::format("cannot listen on {}: {}", server_instance(settings_, server.target), std::strerror(error));
  log_event("{}: {}", describe(server.target), why);
  const auto kind = error == EADDRINUSE ? ServerEvent::Kind::port_unavailable : ServerEvent::Kind::gave_up;
  events.push_back({kind, server.target, why, ""});
  forget(server);  // no server, no socket
  return false;
}

bool DirectSupervisor::bind_unix_socket(Server& server, std::vector<ServerEvent>& events) {
  try {
    server.socket = listen_on_unix(server.target.socket, kClientsGroup);
    return true;
  } catch (const Error& e) {
    log_event("{}: {}", describe(server.target), e.what());
    events.push_back({ServerEvent::Kind::gave_up, server.target, e.what(), ""});
    forget(server);
    return false;
  }
}

bool DirectSupervisor::spawn(Server& server, std::string& why) {
  SpawnOptions options;
  options.argv = server_program_;
  options.argv.insert(options.argv.end(), {"--spec", server_spec_path(settings_, server.target), "--parent-pid",
                                           std::to_string(::getpid())});
  options.listen_fd = server.socket.get();
  options.extra_env = {"LISTEN_FDS=1"};  // export-server sets LISTEN_PID to its own pid
  options.unset_env = {"NOTIFY_SOCKET", "LISTEN_PID", "LISTEN_FDNAMES", "WATCHDOG_USEC", "WATCHDOG_PID"};
  options.stdout_path = "/dev/null";
  options.stderr_path = log_path(settings_, server.target);
  options.new_session = true;  // no terminal signal (Ctrl-C) reaches it; stopped as a process group
  options.close_other_fds = true;
  try {
    server.child.emplace(ChildProcess::spawn(options));
  } catch (const Error& e) {
    why = e.what();
    return false;
  }
  // Its exit is seen through the epoll set; closing the exit fd (once it is reaped) takes it out of the set. A
  // server whose exit could not be seen is not left running: it is ended, and started again after the back-off.
  epoll_event watch{};
  watch.events = EPOLLIN;
  watch.data.u64 = server.id;
  const int exit_fd = server.child->exit_fd();
  if (exit_fd < 0 || ::epoll_ctl(exits_.get(), EPOLL_CTL_ADD, exit_fd, &watch) != 0) {
    why = fmt::format("cannot watch the exit of server pid {}: {}", server.child->pid(), std::strerror(errno));
    ::kill(-server.child->pid(), SIGKILL);
    server.child->wait();
    server.child.reset();
    return false;
  }
  return true;
}

void DirectSupervisor::stop(const ServerTarget& target, Clock::time_point) {
  Server* server = find(target);
  if (server == nullptr) {
    pending_.push_back({ServerEvent::Kind::stopped, target, "", ""});
    return;
  }
  server->replacing = false;
  if (server->phase == Phase::running) {
    terminate(*server);
  } else if (server->phase != Phase::stopping) {
    server->stop_wanted = true;
    finish_stop(*server);
  }
}

void DirectSupervisor::replace(const ServerTarget& target, Clock::time_point) {
  Server* server = find(target);
  if (server == nullptr || server->phase != Phase::running) return;
  server->replacing = true;
  terminate(*server);
}

// SIGKILL at once, as the export units' KillSignal=: nbdkit 1.32 waits forever for idle clients after SIGTERM, and
// what a server acknowledged is in the page cache, put on the device by the sync once the server is gone; a
// request it has not answered is not acknowledged.
void DirectSupervisor::terminate(Server& server) {
  server.phase = Phase::stopping;
  server.deadline = Clock::time_point::max();
  ::kill(-server.child->pid(), SIGKILL);
}

int DirectSupervisor::clients(const ServerTarget& target) const { return server_clients(target); }

void DirectSupervisor::collect_fds(std::vector<pollfd>& fds) { fds.push_back({exits_.get(), POLLIN, 0}); }

DirectSupervisor::Clock::time_point DirectSupervisor::next_deadline() const {
  if (!pending_.empty() || !unsynced_.empty()) return Clock::time_point::min();
  auto deadline = Clock::time_point::max();
  for (const auto& s : servers_) deadline = std::min(deadline, s->deadline);
  return deadline;
}

std::vector<ServerEvent> DirectSupervisor::advance(Clock::time_point now) {
  std::vector<ServerEvent> events = std::move(pending_);
  pending_.clear();
  // The servers to step: those that exited, whose back-off ended, or that wait for their listener. Stepping can
  // remove servers (stopped, given up) and start waiting ones: they are named by id and looked up at their turn.
  std::vector<uint64_t> due = exited_servers();
  for (const auto& s : servers_) {
    if ((s->phase == Phase::backoff && now >= s->deadline) || s->phase == Phase::waiting_port) due.push_back(s->id);
  }
  for (const uint64_t id : due) {
    const auto it = std::find_if(servers_.begin(), servers_.end(), [&](const auto& s) { return s->id == id; });
    if (it != servers_.end()) step(**it, now, events);
  }
  report_stops(events);
  return events;
}

// The ids of the servers whose exit fd is readable. One call, room for every server: the set is level-triggered, so
// an exit fd stays ready (and would be reported again by a second call) until its child is reaped.
std::vector<uint64_t> DirectSupervisor::exited_servers() {
  std::vector<epoll_event> ready(servers_.size() + 1);
  const int n = ::epoll_wait(exits_.get(), ready.data(), static_cast<int>(ready.size()), 0);
  std::vector<uint64_t> ids;
  for (int k = 0; k < n; ++k) ids.push_back(ready[static_cast<size_t>(k)].data.u64);
  return ids;
}

void DirectSupervisor::step(Server& server, Clock::time_point now, std::vector<ServerEvent>& events) {
  switch (server.phase) {
    case Phase::waiting_port:
      if (!listener_taken(server.target, &server)) start(server, now, events);
      break;
    case Phase::backoff:
      if (now >= server.deadline) start(server, now, events);
      break;
    case Phase::running:
    case Phase::stopping:
      // Stepped for its exit fd, which may be an earlier child's: an exit fd closed while a child being spawned still
      // held a copy stays in the epoll set until that child's exec.
      if (exited(*server.child)) on_exit(server, now, events);
      break;
  }
}

void DirectSupervisor::on_exit(Server& server, Clock::time_point now, std::vector<ServerEvent>& events) {
  const pid_t pid = server.child->pid();
  // Anything it left in its process group, before it is reaped: until then its pid, the group's id, cannot be reused.
  ::kill(-pid, SIGKILL);
  const int status = server.child->wait(0ms).value_or(0);
  server.child.reset();
  if (server.phase == Phase::stopping) {
    if (server.replacing) {
      sync_spec_devices(settings_, server.target);
      server.replacing = false;
      server.restarting = false;
      server.failures = 0;
      start(server, now, events);  // the socket stayed bound: `serving` with the current settings
      return;
    }
    log_event("{}: server pid {} stopped", describe(server.target), pid);
    finish_stop(server);
    return;
  }
  if (now - server.started >= kStableRun) server.failures = 0;
  ++server.failures;
  const std::string said = last_line(log_path(settings_, server.target));
  const std::string reason =
      fmt::format("server pid {} {}{}{}", pid, describe_status(status), said.empty() ? "" : ": ", said);
  server.last_failure = reason;
  log_event("{}: {}", describe(server.target), reason);
  sync_spec_devices(settings_, server.target);  // what it acknowledged before it died
  if (server.failures >= kMaxFailures) {
    const ServerTarget target = server.target;
    server.socket.reset();
    remove_unix_socket(target);
    forget(server);
    events.push_back({ServerEvent::Kind::gave_up, target,
                      fmt::format("its server failed {} times in a row; last: {}", kMaxFailures, reason), ""});
    return;
  }
  server.restarting = true;
  server.phase = Phase::backoff;
  server.deadline = now + backoff(server.failures);
}

void DirectSupervisor::finish_stop(Server& server) {
  unsynced_.push_back(server.target);
  server.socket.reset();
  remove_unix_socket(server.target);
  forget(server);
}

void DirectSupervisor::forget(const Server& server) {
  std::erase_if(servers_, [&](const auto& s) { return s.get() == &server; });
}

// The servers stopped in one step (a whole job's, say) are synced side by side, and only then reported stopped.
void DirectSupervisor::report_stops(std::vector<ServerEvent>& events) {
  sync_spec_devices(settings_, unsynced_);
  for (const auto& target : unsynced_) events.push_back({ServerEvent::Kind::stopped, target, "", ""});
  unsynced_.clear();
}

void DirectSupervisor::shutdown() {
  for (auto& s : servers_) {
    if (s->phase == Phase::running) terminate(*s);
  }
  for (auto& s : servers_) {
    if (!s->child) continue;
    s->child->wait();
    s->child.reset();
  }
  for (auto& s : servers_) {
    s->socket.reset();
    remove_unix_socket(s->target);
    unsynced_.push_back(s->target);
  }
  servers_.clear();
  report_stops(pending_);  // for the reconciler's last advance()
}

}  // namespace nbdxm::supervision
