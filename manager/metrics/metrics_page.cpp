#include "metrics_page.hpp"

#include <fmt/format.h>

#include <array>
#include <utility>
#include <vector>

namespace nbdxm::metrics {
namespace {

using Labels = std::vector<std::pair<const char*, std::string>>;

// A label value as the text format wants it: backslash, double quote and line feed escaped.
std::string escaped(const std::string& value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

// One metric family: its samples, written after its HELP and TYPE lines, and only when it has any.
class Family {
 public:
  Family(const char* name, const char* type, const char* help) : name_(name), type_(type), help_(help) {}

  template <typename Value>
  void add(const Labels& labels, Value value) {
    samples_ += name_;
    if (!labels.empty()) {
      samples_ += '{';
      for (size_t i = 0; i < labels.size(); ++i) {
        samples_ += fmt::format("{}{}=\"{}\"", i == 0 ? "" : ",", labels[i].first, escaped(labels[i].second));
      }
      samples_ += '}';
    }
    samples_ += fmt::format(" {}\n", value);
  }

  void write(std::string& out) const {
    if (samples_.empty()) return;
    out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name_, help_, name_, type_);
    out += samples_;
  }

 private:
  const char* name_;
  const char* type_;
  const char* help_;
  std::string samples_;
};

Labels labels_of(const MetricsSnapshot::Export& e) {
  return {{"export", e.name}, {"job", e.job}, {"disk", e.disk}, {"volume", e.volume}};
}

Labels with(Labels labels, const char* name, std::string value) {
  labels.emplace_back(name, std::move(value));
  return labels;
}

// The names of ExportCounters::Request, as `nbdxm export show` names them.
constexpr std::array<const char*, static_cast<size_t>(ExportCounters::Request::kCount)> kRequestKinds = {
    "read", "write", "zero", "trim", "flush"};

void write_export_counters(const MetricsSnapshot& snapshot, std::string& out) {
  Family requests("nbdxm_export_requests_total", "counter", "Requests the export's servers answered, by kind.");
  Family failed("nbdxm_export_failed_requests_total", "counter", "Requests that failed, by kind.");
  Family bytes("nbdxm_export_bytes_total", "counter",
               "Bytes read, written, zeroed and trimmed by requests that succeeded, by kind.");
  Family open("nbdxm_export_connections", "gauge", "Client connections open now.");
  Family connections("nbdxm_export_connections_total", "counter", "Client connections served.");
  Family refused("nbdxm_export_refused_connects_total", "counter",
                 "Connects to the export that were refused, by reason (not_active, device).");
  Family last_write("nbdxm_export_last_write_timestamp_seconds", "gauge",
                    "When the export was last written or zeroed (Unix time).");
  Family coverage("nbdxm_export_coverage_bytes", "gauge",
                  "Distinct bytes of the volume written or zeroed since the export was created.");
  Family size("nbdxm_export_size_bytes", "gauge", "Size of the export's volume.");
  Family durability("nbdxm_export_durability_failures_total", "counter",
                    "Syncs of the export's writes that failed (the export is failed by the manager).");
  for (const auto& e : snapshot.exports) {
    if (!e.counters) continue;
    const ExportCounters::Snapshot& s = *e.counters;
    const Labels labels = labels_of(e);
    for (size_t k = 0; k < kRequestKinds.size(); ++k) {
      requests.add(with(labels, "kind", kRequestKinds[k]), s.requests[k].requests);
      failed.add(with(labels, "kind", kRequestKinds[k]), s.requests[k].failed);
      if (static_cast<ExportCounters::Request>(k) != ExportCounters::Request::flush) {
        bytes.add(with(labels, "kind", kRequestKinds[k]), s.requests[k].bytes);
      }
    }
    open.add(labels, s.connections_open);
    connections.add(labels, s.connections_total);
    refused.add(with(labels, "reason", RefusalCounters::name(RefusalCounters::Reason::not_active)),
                s.refused[static_cast<int>(ExportCounters::Refusal::not_active)]);
    refused.add(with(labels, "reason", RefusalCounters::name(RefusalCounters::Reason::device)),
                s.refused[static_cast<int>(ExportCounters::Refusal::device)]);
    if (s.last_write_unix_ms)
      last_write.add(labels, fmt::format("{:.3f}", static_cast<double>(*s.last_write_unix_ms) / 1000));
    coverage.add(labels, s.coverage_bytes);
    size.add(labels, s.identity.volume_size);
    durability.add(labels, s.durability_failures);
  }
  for (const Family* f :
       {&requests, &failed, &bytes, &open, &connections, &refused, &last_write, &coverage, &size, &durability}) {
    f->write(out);
  }
}

void write_store(const MetricsSnapshot& snapshot, std::string& out) {
  Family up("nbdxm_store_up", "gauge", "Whether the state store could be read for this scrape (1) or not (0).");
  up.add({}, snapshot.store_up ? 1 : 0);
  up.write(out);
  if (!snapshot.store_up) return;
  Family info("nbdxm_export_info", "gauge",
              "Exports that are not revoked (and revoked ones whose server still counts), with their status and "
              "durability mode; always 1.");
  for (const auto& e : snapshot.exports) {
    info.add(with(with(labels_of(e), "status", e.status), "durability", e.durability), 1);
  }
  info.write(out);
  Family by_status("nbdxm_exports", "gauge", "Exports in the store, by status.");
  std::map<std::string, int64_t> counts = {{"pending", 0}, {"active", 0}, {"failed", 0}, {"revoked", 0}};
  for (const auto& [status, count] : snapshot.exports_by_status) counts[status] = count;
  for (const auto& [status, count] : counts) by_status.add({{"status", status}}, count);
  by_status.write(out);
  Family durability(
      "nbdxm_durability_failures_unacknowledged", "gauge",
      "Durability failures (one per failed export life) no operator has acknowledged yet (nbdxm check exits 5 "
      "while any).");
  durability.add({}, snapshot.open_durability_failures);
  durability.write(out);
}

void write_manager(const MetricsSnapshot& snapshot, std::string& out) {
  const auto& m = snapshot.manager;
  Family restarts("nbdxm_server_restarts_total", "counter",
                  "Export servers that exited unexpectedly and were started again, since the manager started.");
  restarts.add({}, m.server_restarts);
  restarts.write(out);
  Family errors("nbdxm_reconcile_errors_total", "counter",
                "Errors of the manager's loop since it started, by kind: store_read (a look at the store failed), "
                "store_write (the store refused a write), server_gave_up (a server kept failing: export failed).");
  errors.add({{"kind", "store_read"}}, m.store_reads_failed);
  errors.add({{"kind", "store_write"}}, m.store_writes_refused);
  errors.add({{"kind", "server_gave_up"}}, m.servers_given_up);
  errors.write(out);
  Family refused("nbdxm_refused_connects_total", "counter",
                 "Connects the export servers refused, by reason, unknown export names included.");
  const RefusalCounters::Counts counts = snapshot.refusals.value_or(RefusalCounters::Counts{});  // none yet: 0
  for (size_t r = 0; r < RefusalCounters::kReasons; ++r) {
    refused.add({{"reason", RefusalCounters::name(static_cast<RefusalCounters::Reason>(r))}}, counts[r]);
  }
  refused.write(out);
  Family started("nbdxm_manager_start_time_seconds", "gauge", "When the manager started (Unix time).");
  started.add({}, fmt::format("{:.3f}", m.start_time_seconds));
  started.write(out);
}

}  // namespace

std::string MetricsPage::render(const MetricsSnapshot& snapshot) {
  std::string out;
  write_store(snapshot, out);
  write_export_counters(snapshot, out);
  write_manager(snapshot, out);
  return out;
}

}  // namespace nbdxm::metrics
