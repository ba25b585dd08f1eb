#pragma once
// One nbdkit process serves one export: how it is started and how it is recognised again.
//
// The manager starts `nbdkit` without -f: nbdkit binds the port, forks, and the forked server has no parent-death
// signal, so it outlives the manager (a foreground nbdkit dies with its parent). The server's pid is learnt from its
// -P pid file in the run directory, which can appear just after the launcher exits and can briefly be empty.
// The command line pins the server to its export (export=NAME) and names the store (db=PATH): that is how a manager,
// after a restart or a crash between starting a server and recording it, finds the servers of its store in /proc.
#include <optional>
#include <string>
#include <vector>

#include "nbdxm/process_identity.hpp"

namespace nbdxm::cli {

// What every export server of one manager gets.
struct ServerSettings {
  std::string nbdkit;
  std::string plugin;
  std::string db_path;  // absolute: servers run with / as their working directory
  std::string listen_address;
  std::string run_dir;
  bool allow_regular_files = false;
  std::string byid_dir;
  int max_connections = 16;
};

// The export a server is for. A different name or port is a different server, and so is a re-used row (`export
// create` resets created_at): its clients must not be those of the old server.
struct ServerTarget {
  int64_t export_id = 0;
  std::string export_name;
  int port = 0;
  std::string created_at;  // not on the command line: an adopted server is matched by name and port
  bool operator==(const ServerTarget&) const = default;
};

std::vector<std::string> server_argv(const ServerSettings& settings, const ServerTarget& target);
std::string server_pid_file(const std::string& run_dir, int64_t export_id);
std::string server_log_file(const std::string& run_dir, int64_t export_id);

// A running nbdkit process serving an export of one store, recognised by its command line.
struct FoundServer {
  ProcessIdentity process;
  std::string export_name;
  int port = 0;
  std::string listen_address;
  // Still the launcher: nbdkit before it forked the server (it holds the listening socket too, for a moment). The
  // manager starts each launcher in a session of its own, and nbdkit's server stays in that session.
  bool launcher = false;
};

// Whether argv is an nbdxm export server of the store at db_path; fills in what it serves.
std::optional<FoundServer> recognise_server(pid_t pid, const std::vector<std::string>& argv,
                                            const std::string& db_path);
// Every live export server of the store in /proc.
std::vector<FoundServer> find_servers(const std::string& db_path);

// The store path as servers are given it (absolute, symbolic links resolved), so that command lines compare equal.
std::string canonical_db_path(const std::string& db_path);

}  // namespace nbdxm::cli
