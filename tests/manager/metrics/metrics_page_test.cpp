// MetricsPage on its own: a snapshot rendered as Prometheus text, each family once with HELP and TYPE, labels
// escaped, and the page clean for the real `promtool check metrics` (Debian package prometheus).
#include "metrics_page.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <string>

#include "manager_harness.hpp"

namespace nbdxm::metrics {
namespace {

using test::kMiB;

size_t count_of(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

ExportCounters::Snapshot counters(uint64_t written, uint64_t volume_size) {
  ExportCounters::Snapshot s;
  s.identity = {1, "2026-11-30T17:00:00.000Z", static_cast<int64_t>(volume_size)};
  s.requests[static_cast<int>(ExportCounters::Request::write)] = {written / kMiB, 1, written};
  s.requests[static_cast<int>(ExportCounters::Request::read)] = {2, 0, 8192};
  s.connections_open = 2;
  s.connections_total = 3;
  s.refused[static_cast<int>(ExportCounters::Refusal::not_active)] = 4;
  s.last_write_unix_ms = 1'764'522'000'123;
  s.coverage_bytes = written;
  return s;
}

// Three exports: two active with counters, one failed (a durability failure) whose name needs escaping, and one
// pending that has not been connected to yet (no counter file).
MetricsSnapshot sample() {
  MetricsSnapshot s;
  s.store_up = true;
  s.exports.push_back({"migration-vol-a", "job-1", "disk-1", "aaaaaaaa-0000-4000-8000-000000000001", "active",
                       "on-close", counters(64 * kMiB, 1024 * kMiB)});
  s.exports.push_back({"migration-vol-b", "job-1", "disk-2", "aaaaaaaa-0000-4000-8000-000000000002", "active",
                       "write-through", counters(32 * kMiB, 1024 * kMiB)});
  auto failed = counters(kMiB, 1024 * kMiB);
  failed.durability_failures = 1;
  s.exports.push_back(
      {"odd\"name\\x", "job-2", "disk-1", "aaaaaaaa-0000-4000-8000-000000000003", "failed", "on-close", failed});
  s.exports.push_back({"migration-vol-d", "job-2", "disk-2", "aaaaaaaa-0000-4000-8000-000000000004", "pending",
                       "on-close", std::nullopt});
  s.exports_by_status = {{"active", 2}, {"failed", 1}, {"pending", 1}, {"revoked", 5}};
  s.open_durability_failures = 1;
  RefusalCounters::Counts refusals{};
  refusals[static_cast<size_t>(RefusalCounters::Reason::unknown_export)] = 7;
  s.refusals = refusals;
  s.manager = {3, 1, 2, 0, 1764522000.5};
  return s;
}

TEST(MetricsPage, RendersEveryFamilyOnceWithItsSamples) {
  const std::string page = MetricsPage::render(sample());
  for (const char* family :
       {"nbdxm_export_requests_total", "nbdxm_export_failed_requests_total", "nbdxm_export_bytes_total",
        "nbdxm_export_connections", "nbdxm_export_connections_total", "nbdxm_export_refused_connects_total",
        "nbdxm_export_last_write_timestamp_seconds", "nbdxm_export_coverage_bytes", "nbdxm_export_size_bytes",
        "nbdxm_export_durability_failures_total", "nbdxm_exports", "nbdxm_export_info", "nbdxm_store_up",
        "nbdxm_durability_failures_unacknowledged", "nbdxm_server_restarts_total", "nbdxm_reconcile_errors_total",
        "nbdxm_refused_connects_total", "nbdxm_manager_start_time_seconds"}) {
    EXPECT_EQ(count_of(page, fmt::format("# TYPE {} ", family)), 1u) << family << "\n" << page;
    EXPECT_EQ(count_of(page, fmt::format("# HELP {} ", family)), 1u) << family;
  }
  const std::string a =
      R"(export="migration-vol-a",job="job-1",disk="disk-1",volume="aaaaaaaa-0000-4000-8000-000000000001")";
  EXPECT_NE(page.find(fmt::format("nbdxm_export_bytes_total{{{},kind=\"write\"}} {}\n", a, 64 * kMiB)),
            std::string::npos)
      << page;
  EXPECT_NE(page.find(fmt::format("nbdxm_export_requests_total{{{},kind=\"write\"}} 64\n", a)), std::string::npos);
  EXPECT_NE(page.find(fmt::format("nbdxm_export_failed_requests_total{{{},kind=\"write\"}} 1\n", a)),
            std::string::npos);
  EXPECT_NE(page.find(fmt::format("nbdxm_export_connections{{{}}} 2\n", a)), std::string::npos);
  EXPECT_NE(page.find(fmt::format("nbdxm_export_refused_connects_total{{{},reason=\"not_active\"}} 4\n", a)),
            std::string::npos);
  EXPECT_NE(page.find(fmt::format("nbdxm_export_last_write_timestamp_seconds{{{}}} 1764522000.123\n", a)),
            std::string::npos);
  EXPECT_NE(page.find(fmt::format("nbdxm_export_coverage_bytes{{{}}} {}\n", a, 64 * kMiB)), std::string::npos);
  EXPECT_NE(
      page.find(
          R"(nbdxm_export_info{export="odd\"name\\x",job="job-2",disk="disk-1",volume="aaaaaaaa-0000-4000-8000-000000000003",status="failed",durability="on-close"} 1)"),
      std::string::npos)
      << page;
  EXPECT_NE(page.find(R"(nbdxm_export_durability_failures_total{export="odd\"name\\x")"), std::string::npos);
  EXPECT_NE(page.find("nbdxm_exports{status=\"revoked\"} 5\n"), std::string::npos);
  EXPECT_NE(page.find("nbdxm_durability_failures_unacknowledged 1\n"), std::string::npos);
  EXPECT_NE(page.find("nbdxm_server_restarts_total 3\n"), std::string::npos);
  EXPECT_NE(page.find("nbdxm_reconcile_errors_total{kind=\"store_read\"} 2\n"), std::string::npos);
  EXPECT_NE(page.find("nbdxm_reconcile_errors_total{kind=\"server_gave_up\"} 1\n"), std::string::npos);
  EXPECT_NE(page.find("nbdxm_refused_connects_total{reason=\"unknown_export\"} 7\n"), std::string::npos);
  EXPECT_NE(page.find("nbdxm_refused_connects_total{reason=\"client_not_allowed\"} 0\n"), std::string::npos);
  // The pending export has no counter file yet: its info only.
  EXPECT_NE(page.find(R"(nbdxm_export_info{export="migration-vol-d")"), std::string::npos);
  EXPECT_EQ(page.find(R"(nbdxm_export_bytes_total{export="migration-vol-d")"), std::string::npos);
}

TEST(MetricsPage, AnUnreadableStoreShowsOnlyWhatNeedsNoStore) {
  MetricsSnapshot s = sample();
  s.store_up = false;
  s.exports.clear();
  const std::string page = MetricsPage::render(s);
  EXPECT_NE(page.find("nbdxm_store_up 0\n"), std::string::npos) << page;
  EXPECT_EQ(page.find("nbdxm_exports{"), std::string::npos);
  EXPECT_EQ(page.find("nbdxm_export_"), std::string::npos);
  EXPECT_NE(page.find("nbdxm_refused_connects_total{reason=\"unknown_export\"} 7\n"), std::string::npos);
}

TEST(MetricsPage, PromtoolFindsNothingToSay) {
  if (::access("/usr/bin/promtool", X_OK) != 0) GTEST_SKIP() << "promtool is not installed (Debian package prometheus)";
  test::TempDir dir;
  const std::string file = dir.file("metrics.txt");
  test::write_file(file, MetricsPage::render(sample()));
  std::string output;
  EXPECT_EQ(test::run_program({"sh", "-c", "promtool check metrics < " + file}, &output), 0) << output;
  EXPECT_EQ(output, "") << output;
}

}  // namespace
}  // namespace nbdxm::metrics
