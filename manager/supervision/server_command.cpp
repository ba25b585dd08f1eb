#include "server_command.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "nbdxm/error.hpp"
#include "nbdxm/export_counters.hpp"
#include "nbdxm/file_descriptor.hpp"
#include "nbdxm/process_identity.hpp"
#include "serve_log.hpp"

namespace nbdxm::supervision {
namespace {

using Json = nlohmann::json;

Json settings_json(const ServerSettings& s) {
  return Json{{"nbdkit", s.nbdkit},
              {"plugin", s.plugin},
              {"db_path", s.db_path},
              {"listen_address", s.listen_address},
              {"run_dir", s.run_dir},
              {"allow_regular_files", s.allow_regular_files},
              {"allow_uncorrelated", s.allow_uncorrelated},
              {"byid_dir", s.byid_dir},
              {"max_connections", s.max_connections},
              {"server_threads", s.server_threads},
              {"tasks_max", s.tasks_max},
              {"memory_max", s.memory_max},
              {"tls", s.tls},
              {"allow_from", s.allow_from},
              {"shared", s.shared}};
}

// Specs written by another version of nbdxm are read too: unknown keys are ignored, and a missing key keeps its
// default (a server whose settings differ from the manager's is replaced: see Reconciler).
template <typename T>
void read_key(const Json& j, const char* key, T& value) {
  const auto found = j.find(key);
  if (found != j.end()) found->get_to(value);
}

ServerSettings settings_of(const Json& j) {
  ServerSettings s;
  read_key(j, "nbdkit", s.nbdkit);
  read_key(j, "plugin", s.plugin);
  read_key(j, "db_path", s.db_path);
  read_key(j, "listen_address", s.listen_address);
  read_key(j, "run_dir", s.run_dir);
  read_key(j, "allow_regular_files", s.allow_regular_files);
  read_key(j, "allow_uncorrelated", s.allow_uncorrelated);
  read_key(j, "byid_dir", s.byid_dir);
  read_key(j, "max_connections", s.max_connections);
  read_key(j, "server_threads", s.server_threads);
  read_key(j, "tasks_max", s.tasks_max);
  read_key(j, "memory_max", s.memory_max);
  read_key(j, "tls", s.tls);
  read_key(j, "allow_from", s.allow_from);
  read_key(j, "shared", s.shared);
  return s;
}

Json target_json(const ServerTarget& t) {
  return Json{{"export_id", t.export_id},   {"export_name", t.export_name}, {"port", t.port},
              {"created_at", t.created_at}, {"socket", t.socket},           {"address", t.address}};
}

ServerTarget target_of(const Json& j) {
  ServerTarget t;
  read_key(j, "export_id", t.export_id);
  read_key(j, "export_name", t.export_name);
  read_key(j, "port", t.port);
  read_key(j, "created_at", t.created_at);
  read_key(j, "socket", t.socket);
  read_key(j, "address", t.address);
  return t;
}

// The spec's JSON object; throws Error(usage) naming the file.
template <typename Read>
auto read_spec_json(const std::string& path, Read read) {
  std::ifstream in(path);
  if (!in) throw Error(ExitCode::usage, fmt::format("server spec {} cannot be read: {}", path, std::strerror(errno)));
  try {
    const Json j = Json::parse(in);
    if (!j.is_object()) throw std::runtime_error("not a JSON object");
    return read(j);
  } catch (const std::exception& e) {
    throw Error(ExitCode::usage,
                fmt::format("server spec {} is not valid: {}; the manager writes it, do not edit it", path, e.what()));
  }
}

std::vector<std::string> devices_of(const Json& j) {
  std::vector<std::string> devices;
  read_key(j, "devices", devices);
  return devices;
}

Json lives_json(const std::vector<SpecLife>& lives) {
  Json array = Json::array();
  for (const auto& l : lives) {
    array.push_back({{"export_id", l.export_id},
                     {"created_at", l.created_at},
                     {"export_name", l.export_name},
                     {"device", l.device}});
  }
  return array;
}

std::vector<SpecLife> lives_of(const Json& j) {
  std::vector<SpecLife> lives;
  const auto found = j.find("lives");
  if (found == j.end() || !found->is_array()) return lives;
  for (const auto& item : *found) {
    SpecLife l;
    read_key(item, "export_id", l.export_id);
    read_key(item, "created_at", l.created_at);
    read_key(item, "export_name", l.export_name);
    read_key(item, "device", l.device);
    lives.push_back(std::move(l));
  }
  return lives;
}

std::string device_of(const Json& j) {
  std::string device;
  read_key(j, "device", device);
  return device;
}

std::vector<std::string> split_commas(const std::string& list) {
  std::vector<std::string> items;
  std::stringstream in(list);
  for (std::string item; std::getline(in, item, ',');) items.push_back(item);
  return items;
}

// Whether the allowlist `wanted` admits no client that `running` refuses: empty admits everyone; otherwise each
// network of `running` must still be listed (a network replaced by a wider one counts as narrowing: a settings
// change is rare, and replacing the server at once is the safe side).
bool allowlist_narrows(const std::string& running, const std::string& wanted) {
  if (wanted.empty() || running == wanted) return false;
  if (running.empty()) return true;
  const auto kept = split_commas(wanted);
  for (const auto& network : split_commas(running)) {
    if (std::find(kept.begin(), kept.end(), network) == kept.end()) return true;
  }
  return false;
}

}  // namespace

bool narrows_access(const ServerSettings& running, const ServerSettings& wanted) {
  return running.listen_address != wanted.listen_address ||
         (running.allow_regular_files && !wanted.allow_regular_files) ||
         (running.allow_uncorrelated && !wanted.allow_uncorrelated) ||
         wanted.max_connections < running.max_connections || (wanted.tls && !running.tls) ||
         allowlist_narrows(running.allow_from, wanted.allow_from);
}

std::string describe_difference(const ServerSettings& running, const ServerSettings& wanted) {
  std::vector<std::string> parts;
  auto note = [&parts](const char* name, const auto& was, const auto& now) {
    if (was != now) parts.push_back(fmt::format("{} {} -> {}", name, was, now));
  };
  note("nbdkit", running.nbdkit, wanted.nbdkit);
  note("plugin", running.plugin, wanted.plugin);
  note("db", running.db_path, wanted.db_path);
  note("listen", running.listen_address, wanted.listen_address);
  note("run-dir", running.run_dir, wanted.run_dir);
  note("allow-regular-files", running.allow_regular_files, wanted.allow_regular_files);
  note("allow-uncorrelated", running.allow_uncorrelated, wanted.allow_uncorrelated);
  note("byid-dir", running.byid_dir, wanted.byid_dir);
  note("max-connections", running.max_connections, wanted.max_connections);
  note("server-threads", running.server_threads, wanted.server_threads);
  note("tasks-max", running.tasks_max, wanted.tasks_max);
  note("memory-max", running.memory_max, wanted.memory_max);
  note("tls", running.tls ? "require" : "off", wanted.tls ? "require" : "off");
  note("allow-from", running.allow_from.empty() ? "any" : running.allow_from,
       wanted.allow_from.empty() ? "any" : wanted.allow_from);
  note("shared", running.shared, wanted.shared);
  return fmt::format("{}", fmt::join(parts, ", "));
}

std::vector<std::string> server_argv(const ServerSettings& settings, const ServerTarget& target) {
  std::vector<std::string> argv{
      settings.nbdkit,
      "--foreground",
      "--log=stderr",
      "--threads",
      std::to_string(settings.server_threads),
      // nbdkit 1.32 has no connection limit of its own; the limit filter refuses connections beyond it.
      "--filter=limit",
  };
  if (settings.tls) {
    argv.push_back("--tls=require");
    argv.push_back("--tls-psk=" + tls_psk_path(settings.db_path, target));
  }
  argv.insert(
      argv.end(),
      {settings.plugin, "db=" + settings.db_path, settings.shared ? "shared=true" : "export=" + target.export_name,
       // max-connections is per export: the shared server, which serves them all, cannot
       // apply it (its limit would be shared by every export), so it has none.
       "byid-dir=" + settings.byid_dir, "limit=" + std::to_string(settings.shared ? 0 : settings.max_connections),
       "counters-dir=" + counters_dir(settings.run_dir)});
  // The plugin refuses a client the list does not admit, before the handshake (nbdkit 1.32's ip filter, as Debian
  // builds it, cannot parse addresses).
  if (!settings.allow_from.empty()) argv.push_back("allow-from=" + settings.allow_from);
  if (settings.allow_regular_files) argv.push_back("allow-regular-files=true");
  if (settings.allow_uncorrelated) argv.push_back("allow-uncorrelated=true");
  return argv;
}

std::string server_instance(const ServerSettings& settings, const ServerTarget& target) {
  if (!target.socket.empty()) return target.socket;
  const std::string& address = listen_address_of(settings, target);
  if (address.find(':') != std::string::npos) return fmt::format("[{}]:{}", address, target.port);
  return fmt::format("{}:{}", address, target.port);
}

const std::string& listen_address_of(const ServerSettings& settings, const ServerTarget& target) {
  return target.address.empty() ? settings.listen_address : target.address;
}

std::string unix_socket_path(const std::string& run_dir, const std::string& export_name) {
  return fmt::format("{}/exports/{}.sock", run_dir, export_name);
}

std::string listener_of(const ServerTarget& target) {
  return target.socket.empty() ? fmt::format("port {}", target.port) : fmt::format("socket {}", target.socket);
}

int server_clients(const ServerTarget& target) {
  if (!target.socket.empty()) return unix_socket_connections(target.socket);
  return static_cast<int>(TcpSocketTable::read().connection_inodes(target.port).size());
}

std::string server_spec_dir(const std::string& run_dir) { return run_dir + "/servers"; }

std::string counters_dir(const std::string& run_dir) { return run_dir + "/counters"; }

std::string server_spec_path(const std::string& run_dir, const std::string& instance) {
  return fmt::format("{}/{}.json", server_spec_dir(run_dir), instance);
}

std::string server_spec_path(const ServerSettings& settings, const ServerTarget& target) {
  return server_spec_path(settings.run_dir, server_instance(settings, target));
}

void write_server_spec(const std::string& path, const ServerSpec& spec) {
  const std::filesystem::path target(path);
  std::error_code ec;
  std::filesystem::create_directories(target.parent_path(), ec);
  const std::string text = Json{{"settings", settings_json(spec.settings)},
                                {"target", target_json(spec.target)},
                                {"devices", spec.devices},
                                {"device", spec.device},
                                {"lives", lives_json(spec.lives)}}
                               .dump(2) +
                           "\n";
  const std::string temporary = path + ".tmp";
  FileDescriptor fd(::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640));
  if (!fd.valid()) throw std::runtime_error(fmt::format("cannot write {}: {}", temporary, std::strerror(errno)));
  ::fchmod(fd.get(), 0640);  // whatever the umask
  if (::write(fd.get(), text.data(), text.size()) != static_cast<ssize_t>(text.size()) || ::fsync(fd.get()) != 0) {
    throw std::runtime_error(fmt::format("cannot write {}: {}", temporary, std::strerror(errno)));
  }
  fd.reset();
  if (::rename(temporary.c_str(), path.c_str()) != 0) {
    throw std::runtime_error(fmt::format("cannot rename {} to {}: {}", temporary, path, std::strerror(errno)));
  }
}

ServerSpec read_server_spec(const std::string& path) {
  return read_spec_json(path, [](const Json& j) {
    const Json none = Json::object();
    return ServerSpec{settings_of(j.contains("settings") ? j.at("settings") : none),
                      target_of(j.contains("target") ? j.at("target") : none), devices_of(j), device_of(j),
                      lives_of(j)};
  });
}

std::vector<std::string> read_server_spec_devices(const std::string& path) { return read_spec_json(path, devices_of); }

ServerSpec merged_server_spec(const std::string& path, const ServerSettings& settings, const ServerTarget& target,
                              const std::string& device) {
  ServerSpec spec{settings, target, {}, {}};
  std::error_code ec;
  if (std::filesystem::exists(path, ec)) {
    try {
      const auto existing = read_server_spec(path);
      spec.devices = existing.devices;
      spec.device = existing.device;
    } catch (const Error&) {
      // An unreadable spec is replaced; its devices cannot be known.
    }
  }
  if (device.empty()) return spec;
  if (std::find(spec.devices.begin(), spec.devices.end(), device) == spec.devices.end()) spec.devices.push_back(device);
  spec.device = device;
  return spec;
}

std::string resolved_device(const std::string& path) {
  std::error_code ec;
  auto resolved = std::filesystem::canonical(path, ec);
  return ec ? "" : resolved.string();
}

std::string canonical_db_path(const std::string& db_path) {
  std::error_code ec;
  auto path = std::filesystem::weakly_canonical(std::filesystem::absolute(db_path, ec), ec);
  return ec ? db_path : path.string();
}

namespace {

// A sync of `device` that failed after the server was gone may have lost writes the server acknowledged: a
// durability failure of the export's life, reported as the server's own are, through its counter file, which the
// manager folds into the store (the export failed, `nbdxm check` exit 5). The file is created when the server never
// had one. The shared server's own target is no export life: its failure is charged to the lives served from the
// device; with none (a spec of an earlier nbdxm), it is only said (thrown).
void report_durability_failures(const std::string& spec_path, const std::string& device,
                                const DeviceSyncResult& result) {
  if (result.ok()) return;
  const ServerSpec spec = read_server_spec(spec_path);
  if (!spec.settings.shared) {
    record_sync_failures(spec.settings.run_dir, spec.target, result);
    return;
  }
  bool charged = false;
  for (const auto& life : spec.lives) {
    if (life.device != device) continue;
    record_sync_failures(spec.settings.run_dir,
                         ServerTarget{life.export_id, life.export_name, 0, life.created_at, "", ""}, result);
    charged = true;
  }
  if (!charged)
    throw std::runtime_error(fmt::format("the shared server's spec names no export served from {}", device));
}

}  // namespace

void record_sync_failures(const std::string& run_dir, const ServerTarget& target, const DeviceSyncResult& result) {
  if (result.ok()) return;
  const std::string dir = counters_dir(run_dir);
  std::filesystem::create_directories(dir);  // the manager makes it at start; a server may have run without one
  const std::string path = ExportCounters::path(dir, target.export_id, target.created_at);
  const auto counters = ExportCounters::open_or_create(path, {target.export_id, target.created_at, 0});
  for (const auto& failure : result.failures) {
    counters->durability_failure(fmt::format("durability: sync after the server stopped failed: {}", failure));
  }
}

DeviceSyncResult sync_spec_devices(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return {};
  DeviceSyncResult result;
  // One device at a time: each failure is charged to the lives of its own device.
  for (const auto& device : read_spec_json(path, devices_of)) {
    DeviceSyncResult one = sync_devices({device});
    try {
      report_durability_failures(path, device, one);
    } catch (const std::exception& e) {
      one.failures.push_back(fmt::format("cannot report the failure to the manager: {}", e.what()));
    }
    for (auto list : {&DeviceSyncResult::synced, &DeviceSyncResult::missing, &DeviceSyncResult::failures}) {
      (result.*list).insert((result.*list).end(), (one.*list).begin(), (one.*list).end());
    }
  }
  return result;
}

DeviceSyncResult sync_spec_devices(const ServerSettings& settings, const ServerTarget& target) {
  const std::string path = server_spec_path(settings, target);
  try {
    auto result = sync_spec_devices(path);
    for (const auto& failure : result.failures) {
      cli::log_event("export {} ({}): cannot sync {}", target.export_name, listener_of(target), failure);
    }
    return result;
  } catch (const Error& e) {
    cli::log_event("export {} ({}): cannot sync its devices: {}", target.export_name, listener_of(target), e.what());
    return {{}, {}, {e.what()}};
  }
}

namespace {

// work(0) ... work(count - 1), up to kParallelSyncs at a time.
template <typename Work>
void in_parallel(size_t count, Work work) {
  if (count <= 1) {
    for (size_t k = 0; k < count; ++k) work(k);
    return;
  }
  std::atomic<size_t> next{0};
  std::vector<std::jthread> workers;
  for (size_t i = 0; i < std::min(count, kParallelSyncs); ++i) {
    workers.emplace_back([&] {
      for (size_t k = next++; k < count; k = next++) work(k);
    });
  }
}  // the workers join here

}  // namespace

void sync_spec_devices(const ServerSettings& settings, const std::vector<ServerTarget>& targets) {
  in_parallel(targets.size(), [&](size_t k) { sync_spec_devices(settings, targets[k]); });
}

std::vector<bool> sync_spec_files(const std::vector<std::string>& paths) {
  std::vector<char> synced(paths.size(), 0);  // not vector<bool>: each worker writes its own element
  in_parallel(paths.size(), [&](size_t k) {
    try {
      const auto result = sync_spec_devices(paths[k]);
      for (const auto& failure : result.failures) cli::log_event("server spec {}: cannot sync {}", paths[k], failure);
      synced[k] = result.ok() ? 1 : 0;
    } catch (const std::exception& e) {
      cli::log_event("server spec {}: cannot sync its devices: {}", paths[k], e.what());
    }
  });
  return {synced.begin(), synced.end()};
}

std::string tls_key_dir(const std::string& db_path) {
  return (std::filesystem::path(db_path).parent_path() / "tls").string();
}

std::string tls_psk_path(const std::string& db_path, const ServerTarget& target) {
  std::string life;
  std::copy_if(target.created_at.begin(), target.created_at.end(), std::back_inserter(life),
               [](char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0; });
  return fmt::format("{}/{}.{}.psk", tls_key_dir(db_path), target.export_name, life);
}

void ensure_tls_psk(const std::string& path, const std::string& identity) {
  std::error_code ec;
  if (std::filesystem::exists(path, ec)) return;
  const std::filesystem::path dir = std::filesystem::path(path).parent_path();
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    throw std::runtime_error(
        fmt::format("cannot create the TLS key directory {}: {}", dir.string(), std::strerror(errno)));
  }
  unsigned char key[32];  // 256 bits
  if (::getrandom(key, sizeof key, 0) != static_cast<ssize_t>(sizeof key)) {
    throw std::runtime_error(fmt::format("cannot get random bytes for a TLS key: {}", std::strerror(errno)));
  }
  std::string text = identity + ":";
  for (unsigned char byte : key) text += fmt::format("{:02x}", byte);
  text += "\n";
  const std::string temporary = path + ".tmp";
  FileDescriptor fd(::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd.valid()) throw std::runtime_error(fmt::format("cannot write {}: {}", temporary, std::strerror(errno)));
  ::fchmod(fd.get(), 0600);  // whatever the umask
  const bool written =
      ::write(fd.get(), text.data(), text.size()) == static_cast<ssize_t>(text.size()) && ::fsync(fd.get()) == 0;
  ::explicit_bzero(text.data(), text.size());
  ::explicit_bzero(key, sizeof key);
  if (!written) throw std::runtime_error(fmt::format("cannot write {}: {}", temporary, std::strerror(errno)));
  fd.reset();
  if (::rename(temporary.c_str(), path.c_str()) != 0) {
    throw std::runtime_error(fmt::format("cannot rename {} to {}: {}", temporary, path, std::strerror(errno)));
  }
}

void remove_tls_psk(const std::string& path) {
  std::error_code ec;
  std::filesystem::remove(path, ec);
}

}  // namespace nbdxm::supervision
