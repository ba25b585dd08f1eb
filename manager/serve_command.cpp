// `nbdxm serve`: the manager daemon. See supervision/reconciler.hpp for what it does, server_supervisor.hpp for
// who runs the servers and server_command.hpp for how they are started.
#include <fmt/format.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>

#include "commands.hpp"
#include "metrics_collector.hpp"
#include "metrics_page.hpp"
#include "metrics_server.hpp"
#include "nbdxm/child_process.hpp"
#include "nbdxm/database.hpp"
#include "nbdxm/error.hpp"
#include "nbdxm/export_store.hpp"
#include "nbdxm/file_descriptor.hpp"
#include "nbdxm/process_identity.hpp"
#include "reconciler.hpp"
#include "serve_config.hpp"
#include "serve_log.hpp"
#include "server_command.hpp"

namespace nbdxm::cli {
namespace {

// Stop signals arrive through a signalfd, read by the loop between steps; blocked first so none is lost.
FileDescriptor stop_signals() {
  sigset_t set;
  sigemptyset(&set);
  for (int signo : {SIGTERM, SIGINT, SIGHUP}) sigaddset(&set, signo);
  if (sigprocmask(SIG_BLOCK, &set, nullptr) != 0) {
    throw Error(ExitCode::failure, fmt::format("cannot block stop signals: {}", std::strerror(errno)));
  }
  FileDescriptor fd(signalfd(-1, &set, SFD_CLOEXEC));
  if (!fd.valid()) throw Error(ExitCode::failure, fmt::format("signalfd: {}", std::strerror(errno)));
  return fd;
}

void prepare_run_dir(const std::string& run_dir) {
  std::error_code ec;
  std::filesystem::create_directories(run_dir, ec);
  if (ec || !std::filesystem::is_directory(run_dir)) {
    throw Error(ExitCode::usage, fmt::format("run directory {} cannot be created ({}); give a writable --run-dir",
                                             run_dir, ec ? ec.message() : "not a directory"));
  }
  if (::access(run_dir.c_str(), W_OK) != 0) {
    throw Error(ExitCode::usage, fmt::format("run directory {} is not writable; give a writable --run-dir", run_dir));
  }
  const std::string counters = supervision::counters_dir(run_dir);
  std::filesystem::create_directories(counters, ec);
  if (ec || ::chmod(counters.c_str(), 0750) != 0) {
    throw Error(ExitCode::usage, fmt::format("counters directory {} cannot be created ({}); give a writable --run-dir",
                                             counters, ec ? ec.message() : std::strerror(errno)));
  }
}

// Fails at start, with nbdkit's own words, when nbdkit or the plugin cannot be loaded; otherwise every export would
// only fail later, one by one.
void check_nbdkit_loads_plugin(const ServeConfig& config) {
  const std::string log = config.run_dir + "/nbdkit-check.log";
  std::error_code ec;
  std::filesystem::remove(log, ec);
  SpawnOptions options;
  options.argv = {config.nbdkit, "--dump-plugin", config.plugin};
  options.stdout_path = "/dev/null";
  options.stderr_path = log;
  int rc = 0;
  try {
    rc = run_to_completion(options, std::chrono::seconds(30));
  } catch (const Error& e) {
    throw Error(ExitCode::usage, fmt::format("{}; give the nbdkit program with --nbdkit", e.what()));
  }
  if (rc == 0) {
    std::filesystem::remove(log, ec);
    return;
  }
  std::ifstream in(log);
  std::string first;
  std::getline(in, first);
  throw Error(ExitCode::usage,
              fmt::format("nbdkit ({}) cannot load the plugin {}: {}; give the plugin with --plugin", config.nbdkit,
                          config.plugin, first.empty() ? "exit status " + std::to_string(rc) : first));
}

// A manager with many exports holds a socket and a pidfd per server (direct backend): lift the soft limit on open
// files to the hard one.
void raise_file_limit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
  }
}

void run_serve(CLI::App& serve, const GlobalOptions& options, ServeConfig& config) {
  apply_config_file(serve, config);
  validate(config);
  const double start_time = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  const PortRange ports = config.ports();
  const std::string db_path = supervision::canonical_db_path(options.db);
  Database db = Database::open(db_path, Database::Access::read_write);
  db.require_current_schema();
  ExportStore store(db);
  prepare_run_dir(config.run_dir);
  check_nbdkit_loads_plugin(config);

  FileDescriptor signals = stop_signals();
  raise_file_limit();

  const auto self = identify_process(getpid());
  if (!self) throw Error(ExitCode::failure, "cannot read this process's own /proc entry");
  ManagerInstance me;
  me.process = *self;
  me.listen_address = config.listen;
  me.port_low = ports.low;
  me.port_high = ports.high;
  me.run_dir = config.run_dir;
  me.allow_regular_files = config.allow_regular_files;
  me.byid_dir = config.byid_dir;
  me.max_connections = config.max_connections;
  me.tls_default = config.tls == "require";
  me.version = NBDXM_VERSION;
  me.durability = config.durability;
  me.transport_default = config.transport;
  const auto shared = config.shared_target();
  if (shared) {
    supervision::ServerSettings listener;
    listener.listen_address = config.listen;
    me.shared_listener = supervision::server_instance(listener, *shared);
  }
  store.register_manager(me, still_running);
  // Bound once this manager is the store's only one (a second manager is told that, not that the port is taken),
  // and before any server is started: an address that cannot be listened on stops it with nothing started.
  std::optional<metrics::MetricsServer> metrics_server;
  try {
    if (!config.metrics_listen.empty()) metrics_server.emplace(config.metrics_listen);
  } catch (...) {
    store.unregister_manager(*self);
    throw;
  }
  log_event("manager pid {} for store {}: servers on {} ports {}, run directory {}, nbdkit {}, plugin {}", self->pid,
            db_path, config.listen, ports.str(), config.run_dir, config.nbdkit, config.plugin);

  supervision::ServerSettings settings;
  settings.nbdkit = config.nbdkit;
  settings.plugin = config.plugin;
  settings.db_path = db_path;
  settings.listen_address = config.listen;
  settings.run_dir = config.run_dir;
  settings.allow_regular_files = config.allow_regular_files;
  settings.allow_uncorrelated = config.allow_uncorrelated;
  settings.byid_dir = config.byid_dir;
  settings.max_connections = config.max_connections;
  settings.server_threads = config.server_threads;
  settings.tasks_max = config.tasks_max;
  settings.memory_max = config.memory_max;
  int left_running = 0;
  std::string kind;
  const auto counters = std::make_shared<supervision::ManagerCounters>();
  if (metrics_server) {
    // Its own thread, its own read-only store connection per scrape (MetricsCollector): never the loop's.
    metrics_server->start([collector = metrics::MetricsCollector(db_path, supervision::counters_dir(config.run_dir),
                                                                 counters, start_time)] {
      return metrics::MetricsPage::render(collector.collect());
    });
    log_event("metrics on http://{}/metrics", config.metrics_listen);
  }
  try {
    const auto supervisor = supervision::make_supervisor(config.supervisor_kind(), settings, ports.low);
    kind = supervisor->kind();
    supervision::Reconciler reconciler(settings, ports, store, *supervisor, counters);
    if (shared) reconciler.serve_shared(*shared);
    left_running = reconciler.run(signals.get());
  } catch (...) {
    try {
      store.unregister_manager(*self);
    } catch (const std::exception&) {
      // The first error is the one to report; a stale row is recognised as stale anyway.
    }
    throw;
  }
  sd_notify(0, "STOPPING=1");
  store.unregister_manager(*self);
  if (left_running > 0) {
    log_event("stopped; {} export server{} keep{} serving, for the next manager to adopt", left_running,
              left_running == 1 ? "" : "s", left_running == 1 ? "s" : "");
  } else {
    log_event("stopped; no export server left running ({} supervisor)", kind);
  }
}

}  // namespace

void register_serve_command(CLI::App& app, GlobalOptions& options) {
  auto config = std::make_shared<ServeConfig>();
  CLI::App* serve = app.add_subcommand(
      "serve",
      "Run the manager: one nbdkit server per live export, kept in step with the store. Options are also read from "
      "the configuration file (default /etc/nbdxm/nbdxm.conf; keys are the long options without dashes). Under "
      "--supervisor direct the servers are the manager's children: exports do not outlive the manager.");
  add_serve_options(*serve, *config);
  serve->callback([serve, &options, config] { run_serve(*serve, options, *config); });
}

}  // namespace nbdxm::cli
