// `nbdxm serve --metrics-listen`: GET /metrics through a real curl while a real nbdcopy writes into an export (the
// counters rise between scrapes), with several exports, one failed by a durability failure, the page clean for the
// real `promtool check metrics`; refused connects counted by reason; a bad address refused with one line, exit 2
// and nothing started.
#include <arpa/inet.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <optional>

#include "manager_harness.hpp"
#include "nbdxm/export_counters.hpp"

namespace nbdxm::test {
namespace {

using namespace std::chrono_literals;

constexpr double kMiBytes = 1024.0 * 1024.0;  // sample values are doubles

// The value of the first sample whose line starts with `series` (name and labels, as the page writes them).
std::optional<double> sample(const std::string& page, const std::string& series) {
  const std::string start = series + " ";
  for (size_t at = page.find(start); at != std::string::npos; at = page.find(start, at + 1)) {
    if (at == 0 || page[at - 1] == '\n') return std::stod(page.substr(at + start.size()));
  }
  return std::nullopt;
}

std::string labels(const NbdExport& e) {
  return fmt::format(R"(export="{}",job="{}",disk="{}",volume="{}")", e.export_name, e.job_id, e.disk_id,
                     e.volume_uuid);
}

// nbdcopy reading from a pipe the test writes into: the copy advances exactly as far as the test has written.
class PipedCopy {
 public:
  explicit PipedCopy(const std::string& uri) : pipe_(::popen(fmt::format("nbdcopy - '{}' 2>&1", uri).c_str(), "w")) {
    if (pipe_ == nullptr) throw std::runtime_error("cannot start nbdcopy");
  }
  ~PipedCopy() {
    if (pipe_ != nullptr) ::pclose(pipe_);
  }
  PipedCopy(const PipedCopy&) = delete;
  PipedCopy& operator=(const PipedCopy&) = delete;
  void feed(const std::string& data) {
    if (std::fwrite(data.data(), 1, data.size(), pipe_) != data.size() || std::fflush(pipe_) != 0) {
      throw std::runtime_error("nbdcopy stopped reading");
    }
  }
  int finish() {  // nbdcopy's exit status
    const int status = ::pclose(pipe_);
    pipe_ = nullptr;
    return status;
  }

 private:
  FILE* pipe_;
};

class ServeMetricsTest : public ManagerTest {
 protected:
  int metrics_port() const { return ports_.high(); }
  std::string metrics_listen() const { return fmt::format("127.0.0.1:{}", metrics_port()); }

  // The page, through curl; fails the test when curl does. Without the sanitizer runtime that the ASan build
  // preloads for the servers: curl hangs at its start with it (in setlocale).
  std::string scrape() {
    std::string page;
    const int code = run_program({"env", "-u", "LD_PRELOAD", "curl", "-sS", "--fail", "--max-time", "10",
                                  fmt::format("http://127.0.0.1:{}/metrics", metrics_port())},
                                 &page);
    EXPECT_EQ(code, 0) << page;
    return page;
  }
  double wait_for_value(const std::string& series, const std::function<bool(double)>& wanted) {
    std::optional<double> value;
    EXPECT_TRUE(wait_until(
        [&] {
          value = sample(scrape(), series);
          return value && wanted(*value);
        },
        30s))
        << series << " is " << (value ? std::to_string(*value) : "missing") << "\n"
        << metrics_manager_.log();
    return value.value_or(-1);
  }
  NbdExport created(const Volume& volume) {
    const CliResult result = create(volume);
    if (result.code != 0) throw std::runtime_error("export create failed: " + result.err);
    return export_of(volume);
  }

  Manager metrics_manager_{db_path_, dir_.path(), ports_.range(100), {"--metrics-listen", metrics_listen()}};
};

TEST_F(ServeMetricsTest, CountersRiseDuringACopyAndPromtoolFindsThePageClean) {
  metrics_manager_.start();
  const auto a = add_volume("job-1", "disk-1");
  const auto b = add_volume("job-1", "disk-2");
  const auto c = add_volume("job-2", "disk-1");
  const NbdExport ea = created(a);
  const NbdExport eb = created(b);
  const NbdExport ec = created(c);

  // c fails the way a server reports it: a durability failure in its counter file, which the manager folds.
  { TcpClient first(ec.port, ec.export_name); }
  ExportCounters::open_or_create(ExportCounters::path(dir_.file("run/counters"), ec.id, ec.created_at),
                                 {ec.id, ec.created_at, ec.size})
      ->durability_failure("durability: fdatasync on /dev/vdz failed: Input/output error");
  wait_for_value(fmt::format("nbdxm_export_info{{{},status=\"failed\",durability=\"on-close\"}}", labels(ec)),
                 [](double v) { return v == 1; });

  const std::string written = fmt::format("nbdxm_export_bytes_total{{{},kind=\"write\"}}", labels(ea));
  {
    PipedCopy copy(fmt::format("nbd://127.0.0.1:{}/{}", ea.port, ea.export_name));
    copy.feed(pattern(16 * kMiB, 1));
    const double first = wait_for_value(written, [](double v) { return v >= 16 * kMiBytes; });
    EXPECT_GE(
        wait_for_value(fmt::format("nbdxm_export_connections{{{}}}", labels(ea)), [](double v) { return v >= 1; }), 1);
    copy.feed(pattern(16 * kMiB, 2));
    const double second = wait_for_value(written, [](double v) { return v >= 32 * kMiBytes; });
    EXPECT_GT(second, first);
    EXPECT_EQ(copy.finish(), 0);
  }
  wait_for_value(fmt::format("nbdxm_export_connections{{{}}}", labels(ea)), [](double v) { return v == 0; });

  // A client at the wrong port: refused, counted by reason.
  EXPECT_TRUE(TcpClient::connect_error(ea.port, eb.export_name).has_value());
  wait_for_value(R"(nbdxm_refused_connects_total{reason="export_not_served_here"})", [](double v) { return v >= 1; });

  const std::string page = scrape();
  EXPECT_GE(sample(page, fmt::format("nbdxm_export_coverage_bytes{{{}}}", labels(ea))).value_or(0), 32 * kMiBytes);
  EXPECT_EQ(sample(page, R"(nbdxm_exports{status="active"})"), 2) << page;
  EXPECT_EQ(sample(page, R"(nbdxm_exports{status="failed"})"), 1);
  EXPECT_EQ(sample(page, "nbdxm_durability_failures_unacknowledged"), 1);
  // The failed export's server is stopped and its counter file, folded into the store, removed: no counters.
  EXPECT_EQ(sample(page, fmt::format("nbdxm_export_connections_total{{{}}}", labels(ec))), std::nullopt);
  EXPECT_EQ(sample(page, "nbdxm_store_up"), 1);
  EXPECT_EQ(sample(page, fmt::format("nbdxm_export_info{{{},status=\"active\",durability=\"on-close\"}}", labels(eb))),
            1);
  const std::string file = dir_.file("metrics.txt");
  write_file(file, page);
  std::string lint;
  EXPECT_EQ(run_program({"sh", "-c", "promtool check metrics < " + file}, &lint), 0) << lint << page;
  EXPECT_EQ(lint, "") << page;
}

TEST_F(ServeMetricsTest, ABadMetricsAddressIsRefusedWithOneLineAndNothingStarted) {
  const FileDescriptor taken(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));  // the port in use
  ASSERT_TRUE(taken.valid());
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(ports_.high() - 1));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(taken.get(), reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  ASSERT_EQ(::listen(taken.get(), 1), 0);
  // A live export, so that "nothing started" means something: its server would be started by a manager.
  metrics_manager_.start();
  const NbdExport e = created(add_volume("job-1", "disk-1"));
  metrics_manager_.stop();
  ASSERT_TRUE(servers_of(db_path_).empty());
  ASSERT_TRUE(store_.get_export(e.export_name).live());
  const std::string config = dir_.file("bad.conf");
  write_file(config, "metrics-listen = \"127.0.0.1\"\n");

  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--metrics-listen", "127.0.0.1"}, "no port"},
      {{"--metrics-listen", "127.0.0.1:0"}, "is not a port"},
      {{"--metrics-listen", "127.0.0.1:70000"}, "is not a port"},
      {{"--metrics-listen", "localhost:9810"}, "is not an IP address"},
      {{"--metrics-listen", "::1:9810"}, "goes in brackets"},
      {{"--metrics-listen", fmt::format("127.0.0.1:{}", ports_.high() - 1)}, "cannot listen there"},
      {{"--metrics-listen", "192.0.2.1:9810"}, "cannot listen there"},  // not an address of this machine
      {{"--config", config}, "no port"},                                // the configuration key
  };
  for (const auto& [args, why] : cases) {
    SCOPED_TRACE(args.back());
    std::filesystem::remove(dir_.file("manager.log"));
    Manager manager(db_path_, dir_.path(), ports_.range(100), args);
    manager.launch();
    const auto status = manager.wait_exit(30s);
    ASSERT_TRUE(status.has_value()) << manager.log();
    EXPECT_EQ(WEXITSTATUS(*status), 2) << manager.log();
    const std::string log = manager.log();
    EXPECT_EQ(std::count(log.begin(), log.end(), '\n'), 1) << log;
    EXPECT_NE(log.find("--metrics-listen"), std::string::npos) << log;
    EXPECT_NE(log.find(why), std::string::npos) << log;
    EXPECT_TRUE(servers_of(db_path_).empty());
  }
}

}  // namespace
}  // namespace nbdxm::test
