#include "output.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "nbdxm/printable.hpp"

namespace nbdxm::cli {
namespace {

template <class T>
Json optional_value(const std::optional<T>& value) {
  return value ? Json(*value) : Json(nullptr);
}

std::string pad(const std::string& text, size_t width) {
  return text.size() >= width ? text : text + std::string(width - text.size(), ' ');
}

std::string cell(const Json& row, const std::string& column) {
  const auto found = row.find(column);
  return found == row.end() ? "-" : text_value(*found);
}

}  // namespace

Json to_json(const Job& job) {
  return Json{{"id", job.id},         {"source_vm_id", job.source_vm_id}, {"source_vm_name", job.source_vm_name},
              {"status", job.status}, {"created_at", job.created_at},     {"updated_at", job.updated_at}};
}

Json to_json(const DeviceMapping& mapping) {
  return Json{{"id", mapping.id},
              {"volume_uuid", mapping.volume_uuid},
              {"volume_id", mapping.volume_id},
              {"vm_id", mapping.vm_id},
              {"device_path", mapping.device_path},
              {"operation_mode", mapping.operation_mode},
              {"cloudstack_device_id", optional_value(mapping.cloudstack_device_id)},
              {"requires_device_correlation", mapping.requires_device_correlation},
              {"cloudstack_state", mapping.cloudstack_state},
              {"linux_state", mapping.linux_state},
              {"size", mapping.size},
              {"last_sync", mapping.last_sync},
              {"created_at", mapping.created_at},
              {"updated_at", mapping.updated_at}};
}

Json to_json(const VmDisk& disk) {
  return Json{{"id", disk.id},
              {"job_id", disk.job_id},
              {"disk_id", disk.disk_id},
              {"vm_dk_path", disk.vm_dk_path},
              {"size_gb", disk.size_gb},
              {"unit_number", optional_value(disk.unit_number)},
              {"cloudstack_volume_uuid", optional_value(disk.cloudstack_volume_uuid)},
              {"cloudstack_volume_id", optional_value(disk.cloudstack_volume_id)},
              {"sync_status", disk.sync_status},
              {"sync_progress_percent", disk.sync_progress_percent},
              {"bytes_synced", disk.bytes_synced},
              {"created_at", disk.created_at},
              {"updated_at", disk.updated_at}};
}

Json to_json(const NbdExport& nbd_export) {
  return Json{{"export_id", nbd_export.id},
              {"export_name", nbd_export.export_name},
              {"port", nbd_export.port},
              {"status", nbd_export.status},
              {"status_reason", optional_value(nbd_export.status_reason)},
              {"job_id", nbd_export.job_id},
              {"vm_disk_id", nbd_export.vm_disk_id},
              {"disk_id", nbd_export.disk_id},
              {"device_mapping_id", nbd_export.device_mapping_id},
              {"volume_uuid", nbd_export.volume_uuid},
              {"device_path", nbd_export.device_path},
              {"operation_mode", nbd_export.operation_mode},
              {"requires_device_correlation", nbd_export.requires_device_correlation},
              {"size", nbd_export.size},
              {"created_at", nbd_export.created_at},
              {"updated_at", nbd_export.updated_at},
              {"durability", nbd_export.durability}};
}

std::string text_value(const Json& value) {
  if (value.is_null()) return "-";
  if (value.is_string()) return printable(value.get<std::string>());
  if (value.is_array()) {
    std::vector<std::string> items;
    for (const auto& item : value) items.push_back(text_value(item));
    return items.empty() ? "-" : fmt::format("{}", fmt::join(items, ", "));
  }
  return value.dump();
}

std::string format_table(const Json& rows, const std::vector<std::string>& columns) {
  std::vector<std::vector<std::string>> cells;
  cells.reserve(rows.size());
  for (const auto& row : rows) {
    auto& line = cells.emplace_back();
    for (const auto& column : columns) line.push_back(cell(row, column));
  }
  return format_table(cells, columns);
}

std::string format_table(const std::vector<std::vector<std::string>>& cells, const std::vector<std::string>& columns) {
  std::vector<size_t> widths;
  for (const auto& column : columns) widths.push_back(column.size());
  for (const auto& line : cells) {
    for (size_t i = 0; i < columns.size() && i < line.size(); ++i) widths[i] = std::max(widths[i], line[i].size());
  }
  std::string text;
  auto append_line = [&](const std::vector<std::string>& values) {
    for (size_t i = 0; i < values.size(); ++i) {
      text += values[i];
      if (i + 1 < values.size()) text.append(widths[i] + 2 - values[i].size(), ' ');
    }
    text += '\n';
  };
  append_line(columns);
  for (const auto& line : cells) append_line(line);
  return text;
}

std::string format_record(const Json& object) {
  size_t width = 0;
  for (const auto& [key, value] : object.items()) width = std::max(width, key.size());
  std::string text;
  for (const auto& [key, value] : object.items()) text += pad(key, width + 2) + text_value(value) + "\n";
  return text;
}

void print_list(const GlobalOptions& options, const Json& rows, const std::vector<std::string>& columns) {
  print_result(options, rows, format_table(rows, columns));
}

void print_record(const GlobalOptions& options, const Json& object) {
  print_result(options, object, format_record(object));
}

void print_result(const GlobalOptions& options, const Json& object, const std::string& text) {
  if (options.json) {
    fmt::print("{}\n", object.dump(2, ' ', false, Json::error_handler_t::replace));
  } else {
    fmt::print("{}", text);
  }
}

}  // namespace nbdxm::cli
