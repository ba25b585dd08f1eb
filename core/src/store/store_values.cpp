// Value rules checked before writes; each predicate answers as a CHECK constraint of schema.sql does (a test proves
// it), and each message names the value and the rule.
#include "nbdxm/store_values.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <vector>

#include "nbdxm/client_allowlist.hpp"
#include "nbdxm/error.hpp"

namespace nbdxm::values {
namespace {

bool is_lower_hex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }
bool is_alnum(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

template <size_t N>
bool one_of(const std::array<std::string_view, N>& set, std::string_view value) {
  return std::find(set.begin(), set.end(), value) != set.end();
}

template <size_t N>
std::string join(const std::array<std::string_view, N>& set) {
  return fmt::format("{}", fmt::join(set, ", "));
}

[[noreturn]] void usage(const std::string& message) { throw Error(ExitCode::usage, message); }

bool has_length(std::string_view value, size_t max) { return !value.empty() && value.size() <= max; }

void require_length(std::string_view what, const std::string& value, size_t max) {
  if (!has_length(value, max)) usage(fmt::format("{} {:?} must be 1 to {} characters", what, value, max));
}

}  // namespace

bool is_canonical_uuid(std::string_view value) {
  if (value.size() != 36) return false;
  for (size_t i = 0; i < value.size(); ++i) {
    const bool dash_position = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash_position ? value[i] != '-' : !is_lower_hex(value[i])) return false;
  }
  return true;
}

bool is_valid_export_name(std::string_view value) {
  if (value.empty() || value.size() > kMaxNameLength || !is_alnum(value.front())) return false;
  return std::all_of(value.begin(), value.end(),
                     [](char c) { return is_alnum(c) || c == '.' || c == '_' || c == '-'; });
}

bool is_normalized_absolute_path(std::string_view path) {
  if (path.size() < 2 || path.front() != '/' || path.back() == '/') return false;
  size_t start = 1;
  while (start <= path.size()) {
    const size_t end = std::min(path.find('/', start), path.size());
    const std::string_view component = path.substr(start, end - start);
    if (component.empty() || component == "." || component == "..") return false;
    start = end + 1;
  }
  return true;
}

bool is_job_id(std::string_view value) { return has_length(value, kMaxNameLength); }
bool is_job_status(std::string_view value) { return one_of(kJobStatuses, value); }
bool is_mapping_vm_id(std::string_view value) { return has_length(value, kMaxMappingFieldLength); }
bool is_device_path_length(std::string_view value) { return has_length(value, kMaxDevicePathLength); }
bool is_operation_mode(std::string_view value) { return one_of(kOperationModes, value); }
bool is_mapping_size(int64_t bytes) { return bytes > 0 && bytes <= kMaxMappingSize; }
bool is_disk_id(std::string_view value) { return has_length(value, kMaxNameLength); }
bool is_disk_size_gb(int64_t size_gb) { return size_gb > 0 && size_gb <= kMaxDiskSizeGb; }
bool is_port(int64_t port) { return port >= 1 && port <= 65535; }
bool is_export_status(std::string_view value) { return one_of(kExportStatuses, value); }

void require_not_empty(std::string_view what, const std::string& value) {
  if (value.empty()) usage(fmt::format("{} must not be empty", what));
}

void require_job_id(const std::string& id) { require_length("job id", id, kMaxNameLength); }

void require_job_status(const std::string& status) {
  if (!is_job_status(status)) usage(fmt::format("job status {:?} is not one of {}", status, join(kJobStatuses)));
}

void require_volume_uuid(const std::string& uuid) {
  if (!is_canonical_uuid(uuid)) {
    usage(
        fmt::format("volume UUID {:?} is not a canonical lower-case UUID (8-4-4-4-12 hex digits, like "
                    "b3bb9310-1b59-4f62-97e8-cefffdfe3804)",
                    uuid));
  }
}

void require_device_path(const std::string& path, const std::string& operation_mode) {
  require_length("device path", path, kMaxDevicePathLength);
  if (operation_mode == "oma" && !is_normalized_absolute_path(path)) {
    usage(
        fmt::format("device path {:?} must be an absolute path without empty, '.' or '..' components or a "
                    "trailing '/' (like /dev/vdc)",
                    path));
  }
}

void require_operation_mode(const std::string& mode) {
  if (!is_operation_mode(mode)) {
    usage(fmt::format("operation mode {:?} is not one of {}", mode, join(kOperationModes)));
  }
}

void require_mapping_size(int64_t bytes) {
  if (!is_mapping_size(bytes)) {
    usage(fmt::format("volume size {} bytes is out of range: it must be 1 to {} bytes", bytes, kMaxMappingSize));
  }
}

void require_disk_id(const std::string& disk_id) { require_length("disk id", disk_id, kMaxNameLength); }

void require_disk_size_gb(int64_t size_gb) {
  if (!is_disk_size_gb(size_gb)) {
    usage(fmt::format("disk size {} GiB is out of range: it must be 1 to {} GiB", size_gb, kMaxDiskSizeGb));
  }
}

void require_export_name(const std::string& name) {
  if (!is_valid_export_name(name)) {
    usage(
        fmt::format("export name {:?} must be 1 to {} characters of A-Z, a-z, 0-9, '.', '_' and '-', starting "
                    "with a letter or digit",
                    name, kMaxNameLength));
  }
}

void require_export_status(const std::string& status) {
  if (!is_export_status(status)) {
    usage(fmt::format("export status {:?} is not one of {}", status, join(kExportStatuses)));
  }
}

void require_port(int64_t port) {
  if (!is_port(port)) usage(fmt::format("port {} is out of range: it must be 1 to 65535", port));
}

std::string canonical_allow_from(const std::string& list) { return ClientAllowlist::parse(list).str(); }

}  // namespace nbdxm::values
