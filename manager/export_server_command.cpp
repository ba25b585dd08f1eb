// `nbdxm export-server --spec SPEC`: how each export server runs, under both supervisor backends
// (see supervision/server_command.hpp). Started by the manager or by the export's systemd unit, not by hand.
#include <fmt/format.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <cstring>

#include "commands.hpp"
#include "nbdxm/error.hpp"
#include "server_command.hpp"

namespace nbdxm::cli {
namespace {

struct ExportServerArgs {
  std::string spec;
  pid_t parent_pid = 0;
};

[[noreturn]] void exec_server(const supervision::ServerSpec& spec, pid_t parent_pid) {
  if (parent_pid > 0) {
    // The direct backend's servers go with their manager: killed when it dies, however it dies.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent_pid) throw Error(ExitCode::unavailable, "the manager that started this server is gone");
  }
  // Socket activation (sd_listen_fds): the listening socket is fd 3, and LISTEN_PID must name the process that
  // takes it, which after exec is this one.
  if (std::getenv("LISTEN_FDS") != nullptr) setenv("LISTEN_PID", std::to_string(getpid()).c_str(), 1);
  std::vector<std::string> argv = supervision::server_argv(spec.settings, spec.target);
  std::vector<char*> c_argv;
  for (auto& arg : argv) c_argv.push_back(arg.data());
  c_argv.push_back(nullptr);
  execvp(c_argv[0], c_argv.data());
  throw Error(ExitCode::failure, fmt::format("cannot run {}: {}; give the nbdkit program with `nbdxm serve --nbdkit`",
                                             argv[0], std::strerror(errno)));
}

void run_export_server(const ExportServerArgs& args) {
  exec_server(supervision::read_server_spec(args.spec), args.parent_pid);
}

}  // namespace

void register_export_server_command(CLI::App& app) {
  auto args = std::make_shared<ExportServerArgs>();
  CLI::App* c = app.add_subcommand(
      "export-server",
      "Run one export's nbdkit server from its server spec (started by `nbdxm serve` or the export's systemd unit)");
  c->group("");  // not for operators: hidden from the command list
  c->add_option("--spec", args->spec, "The server spec file (<run-dir>/servers/<address>:<port>.json)")->required();
  c->add_option("--parent-pid", args->parent_pid, "Die with this process, the manager that started the server");
  c->callback([args] { run_export_server(*args); });
}

}  // namespace nbdxm::cli
