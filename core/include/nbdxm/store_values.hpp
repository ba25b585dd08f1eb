#pragma once
// The value rules of the state store (the schema's CHECK constraints), checked before a write so that bad input is
// refused with one line naming the value and the rule (Error usage, exit 2) rather than by a constraint failure.
// The schema stays the real guard; these only give the better message first.
#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace nbdxm::values {

inline constexpr std::array<std::string_view, 5> kJobStatuses{"pending", "replicating", "completed", "failed",
                                                              "cancelled"};
inline constexpr std::array<std::string_view, 4> kExportStatuses{"pending", "active", "revoked", "failed"};
inline constexpr std::array<std::string_view, 2> kOperationModes{"oma", "failover"};
inline constexpr int64_t kMaxMappingSize = int64_t{1} << 50;  // bytes (1 PiB)
inline constexpr int64_t kMaxDiskSizeGb = int64_t{1} << 20;   // GiB (1 PiB)
inline constexpr size_t kMaxNameLength = 191;                 // job ids, disk ids, export names
inline constexpr size_t kMaxMappingFieldLength = 64;          // mapping ids and vm ids
inline constexpr size_t kMaxDevicePathLength = 255;

// One predicate per CHECK constraint nbdxm checks before a write (nbdxm/store_rules.hpp names which is which; a test
// feeds values at the edges of each rule both to the predicate and to the schema and expects the same answer).
bool is_job_id(std::string_view value);                   // job_id_format
bool is_job_status(std::string_view value);               // job_status_valid
bool is_canonical_uuid(std::string_view value);           // volume_uuid_canonical: 8-4-4-4-12 lower-case hex digits
bool is_mapping_vm_id(std::string_view value);            // mapping_vm_id_format
bool is_device_path_length(std::string_view value);       // device_path_length
bool is_normalized_absolute_path(std::string_view path);  // oma_device_path_normalized: no empty, '.' or '..'
                                                          // component, no trailing '/'
bool is_operation_mode(std::string_view value);           // operation_mode_valid
bool is_mapping_size(int64_t bytes);                      // mapping_size_range
bool is_disk_id(std::string_view value);                  // disk_id_format
bool is_disk_size_gb(int64_t size_gb);                    // disk_size_range
bool is_valid_export_name(std::string_view value);        // export_name_format: 1..191 of [A-Za-z0-9._-], first a
                                                          // letter or digit
bool is_port(int64_t port);                               // port_range
bool is_export_status(std::string_view value);            // export_status_valid

// Each throws Error(usage) naming the value and the rule.
void require_not_empty(std::string_view what, const std::string& value);
void require_job_id(const std::string& id);
void require_job_status(const std::string& status);
void require_volume_uuid(const std::string& uuid);
void require_device_path(const std::string& path, const std::string& operation_mode);
void require_operation_mode(const std::string& mode);
void require_mapping_size(int64_t bytes);
void require_disk_id(const std::string& disk_id);
void require_disk_size_gb(int64_t size_gb);
void require_export_name(const std::string& name);
void require_export_status(const std::string& status);
void require_port(int64_t port);
// An export's client allowlist (`--allow-from`): comma-separated IPv4 or IPv6 addresses, each with an optional
// /prefix length (at most 32 or 128). Returns it canonical (each address as inet_ntop writes it, the prefix length
// always given, duplicates dropped); throws Error(usage) naming the first bad item and the fix.
std::string canonical_allow_from(const std::string& list);

}  // namespace nbdxm::values
