// `nbdxm export watch [NAME | --job ID]`: a live view of the exports' progress, read from the store only
// (export_counters: see export_progress.hpp), one bar per export, refreshed every --interval until every watched
// export has ended (revoked or failed: its job completed, say) or Ctrl-C.
#include <fmt/chrono.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <ctime>
#include <map>
#include <memory>
#include <thread>
#include <utility>

#include "command_store.hpp"
#include "export_progress.hpp"
#include "nbdxm/database.hpp"
#include "nbdxm/error.hpp"
#include "nbdxm/printable.hpp"

namespace nbdxm::cli {
namespace {

using namespace std::chrono_literals;

constexpr int kBarWidth = 30;
volatile std::sig_atomic_t g_stop = 0;

struct WatchArgs {
  std::optional<std::string> name;
  std::optional<std::string> job_id;
  double interval = 1;
};

using Life = std::pair<int64_t, std::string>;  // export id, created_at: a row created anew is another export life

// The export lives to watch, chosen once at the start: the named export; the job's live exports (all of them when
// none is live, shown once); without either, every live export.
std::map<Life, std::string> chosen(ExportStore& store, const WatchArgs& args) {
  std::vector<NbdExport> exports;
  if (args.name) {
    exports.push_back(store.get_export(*args.name));
  } else {
    ExportFilter filter;
    filter.job_id = args.job_id;
    if (args.job_id) store.get_job(*args.job_id);  // not_found names it
    exports = store.list_exports(filter);
    if (std::any_of(exports.begin(), exports.end(), [](const NbdExport& e) { return e.live(); })) {
      std::erase_if(exports, [](const NbdExport& e) { return !e.live(); });
    } else if (!args.job_id) {
      exports.clear();
    }
  }
  std::map<Life, std::string> lives;  // with the export's name
  for (const auto& e : exports) lives.emplace(Life{e.id, e.created_at}, e.export_name);
  return lives;
}

struct Line {
  NbdExport e;  // status "revoked" once its row is gone or created anew
  const ExportCounterRecord* counters = nullptr;
};

std::string bar(double percent) {
  const int filled = std::clamp(static_cast<int>(percent * kBarWidth / 100.0), 0, kBarWidth);
  return std::string(static_cast<size_t>(filled), '#') + std::string(static_cast<size_t>(kBarWidth - filled), '-');
}

std::string now_text() {
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  return fmt::format("{:%Y-%m-%dT%H:%M:%SZ}", utc);
}

std::string text_frame(const std::vector<Line>& lines, double interval) {
  size_t width = 4;
  for (const auto& line : lines) width = std::max(width, printable(line.e.export_name).size());
  std::string text = fmt::format("nbdxm export watch  {}  (every {} s; Ctrl-C to stop)\n", now_text(), interval);
  for (const auto& line : lines) {
    const ExportCounterRecord* c = line.counters;
    const double percent = c ? c->progress_percent : 0.0;
    text += fmt::format("{:<{}}  [{}] {:5.1f}%  {:>8.1f} MiB/s  {:>3} conn  {}\n", printable(line.e.export_name), width,
                        bar(percent), percent, c ? write_mib_per_s(*c) : 0.0, c ? c->connections_open : 0,
                        printable(line.e.status));
  }
  return text;
}

std::string json_frame(const std::vector<Line>& lines, bool ended) {
  Json exports = Json::array();
  for (const auto& line : lines) {
    Json row{{"export_name", line.e.export_name},
             {"status", line.e.status},
             {"job_id", line.e.job_id},
             {"disk_id", line.e.disk_id}};
    add_progress(row, line.counters);
    exports.push_back(std::move(row));
  }
  return Json{{"at", now_text()}, {"exports", exports}, {"ended", ended}}.dump(-1, ' ', false,
                                                                               Json::error_handler_t::replace) +
         "\n";
}

void on_stop_signal(int) { g_stop = 1; }

// Ctrl-C (and SIGTERM) end the watch at the next tick, with the terminal left as it was.
class StopSignals {
 public:
  StopSignals() {
    struct sigaction action {};
    action.sa_handler = on_stop_signal;
    sigemptyset(&action.sa_mask);
    ::sigaction(SIGINT, &action, &old_int_);
    ::sigaction(SIGTERM, &action, &old_term_);
  }
  ~StopSignals() {
    ::sigaction(SIGINT, &old_int_, nullptr);
    ::sigaction(SIGTERM, &old_term_, nullptr);
  }
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

 private:
  struct sigaction old_int_ {};
  struct sigaction old_term_ {};
};

void watch_command(const GlobalOptions& options, const WatchArgs& args) {
  if (args.name && args.job_id) throw Error(ExitCode::usage, "name what to watch: one export NAME, or --job ID");
  if (!(args.interval >= 0.1 && args.interval <= 3600)) {
    throw Error(ExitCode::usage,
                fmt::format("--interval {} is not valid; give seconds from 0.1 to 3600", args.interval));
  }
  CommandStore opened(options, Database::Access::read_only);
  ExportStore& store = opened.exports;
  const std::map<Life, std::string> watched = chosen(store, args);
  if (watched.empty()) {
    print_result(options, Json{{"at", now_text()}, {"exports", Json::array()}, {"ended", true}},
                 "no live exports to watch\n");
    return;
  }
  const bool terminal = ::isatty(STDOUT_FILENO) == 1;
  const StopSignals signals;
  g_stop = 0;
  const auto interval = std::chrono::milliseconds(static_cast<int64_t>(args.interval * 1000));
  for (;;) {
    std::map<int64_t, NbdExport> rows;
    for (auto& e : store.list_exports()) rows.emplace(e.id, std::move(e));
    const auto counters = counters_by_export(store);
    std::vector<Line> lines;
    bool ended = true;
    for (const auto& [life, name] : watched) {
      const auto& [id, created_at] = life;
      const auto found = rows.find(id);
      Line line;
      if (found != rows.end() && found->second.created_at == created_at) {
        line.e = found->second;
        line.counters = counters_of(counters, id);
      } else {
        line.e.id = id;  // deleted or created anew: this life has ended
        line.e.export_name = name;
        line.e.status = "revoked";
      }
      ended = ended && !line.e.live();
      lines.push_back(std::move(line));
    }
    if (options.json) {
      fmt::print("{}", json_frame(lines, ended));
    } else {
      fmt::print("{}{}{}", terminal ? "\033[H\033[2J" : "", text_frame(lines, args.interval), terminal ? "" : "\n");
    }
    if (ended && !options.json) fmt::print("every watched export has ended\n");
    std::fflush(stdout);
    if (ended) return;
    for (auto waited = 0ms; waited < interval && g_stop == 0; waited += 50ms) std::this_thread::sleep_for(50ms);
    if (g_stop != 0) return;
  }
}

}  // namespace

void register_export_watch(CLI::App& group, GlobalOptions& options) {
  auto args = std::make_shared<WatchArgs>();
  CLI::App* w = group.add_subcommand(
      "watch",
      "Live view of the exports' progress (percent of the disk covered, write rate over the last 10 s, connections, "
      "state), one bar per export, from the store; until every watched export has ended (revoked or failed) or "
      "Ctrl-C. With --json: one JSON object per refresh, one per line");
  w->add_option("NAME", args->name, "Only this export (default: every live export)");
  w->add_option("--job", args->job_id, "The job's live exports");
  w->add_option("--interval", args->interval, "Seconds between refreshes")->capture_default_str();
  w->callback([&options, args] { watch_command(options, *args); });
}

}  // namespace nbdxm::cli
