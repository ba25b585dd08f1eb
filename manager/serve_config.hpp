#pragma once
// The settings of `nbdxm serve`: command-line options, also read from a configuration file whose keys are the long
// options without their dashes (`listen = "0.0.0.0"`; a `[serve]` section is accepted too). The command line wins
// over the file; the file wins over the built-in defaults. A key the manager does not know is an error, so a typo
// is not silently ignored.
#include <CLI/CLI.hpp>
#include <optional>
#include <string>

#include "nbdxm/port_allocator.hpp"
#include "server_supervisor.hpp"

namespace nbdxm::cli {

struct ServeConfig {
  static constexpr const char* kDefaultConfigPath = "/etc/nbdxm/nbdxm.conf";

  std::string config_path = kDefaultConfigPath;
  std::string listen = "127.0.0.1";
  std::string port_range = "10810-10999";
  std::string run_dir = "/run/nbdxm";
  std::string nbdkit = "nbdkit";  // looked up in PATH; nbdkit's packaged program
  std::string plugin = "nbdxm";   // nbdkit finds the installed plugin by its short name
  bool allow_regular_files = false;
  bool allow_uncorrelated = false;
  std::string byid_dir = "/dev/disk/by-id";
  int max_connections = 16;
  std::string supervisor = "auto";  // auto, systemd or direct
  int server_threads = 4;           // nbdkit -t of each export server
  std::string tls = "off";          // off or require: the TLS of exports created without --tls or --no-tls
  uint64_t tasks_max = kDefaultTasksMax;
  uint64_t memory_max = kDefaultMemoryMax;
  std::string durability = "on-close";  // what `export create` gives an export without --durability
  std::string metrics_listen;           // ADDRESS:PORT of GET /metrics; empty: not served
  std::string transport = "tcp";        // tcp or unix: what `export create` gives an export without --transport
  std::string shared_listener;          // ADDR:PORT of the shared server (`export create --shared`); empty: none
  std::string shared_socket;            // or its Unix socket's path

  // Limits of each export's unit (systemd backend): 4 times what one export server used (bench/README.md, "Export
  // server limits"): 172 tasks with 10 clients at 16 threads; 780 MiB peak RSS under the migration client's pattern
  // (2 connections, 4 writes of 32 MiB in flight each).
  static constexpr uint64_t kDefaultTasksMax = 688;
  static constexpr uint64_t kDefaultMemoryMax = uint64_t{3} << 30;

  PortRange ports() const { return PortRange::parse(port_range); }
  // The shared server's target (export id 0), when --shared-listener or --shared-socket is given.
  std::optional<supervision::ServerTarget> shared_target() const;
  supervision::SupervisorKind supervisor_kind() const;
};

// Adds the options of `serve` (bound to config) to the subcommand.
void add_serve_options(CLI::App& serve, ServeConfig& config);
// Applies the configuration file to every option that was not given on the command line. A missing file is fine
// when it is the default one; otherwise the file must exist. Throws Error(usage) naming the file and the key.
void apply_config_file(CLI::App& serve, ServeConfig& config);
// Turns relative paths into absolute ones (servers run with / as their working directory) and checks the values;
// throws Error(usage) naming the option and the fix.
void validate(ServeConfig& config);

}  // namespace nbdxm::cli
