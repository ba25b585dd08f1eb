// nbdkit-nbdxm-plugin: serves each nbdxm export's device, looked up in the state store at every connect.
//
// This file only translates between nbdkit's C callbacks and ExportConnector (core/), which does the work and is
// tested on its own. Rules kept here: no exception crosses into nbdkit (every callback catches), every failure is
// logged as one printable line through log_error and reported to the client through nbdkit_set_error, and the only
// global state is what nbdkit's callbacks require (the parsed parameters and the connector).
#define NBDKIT_API_VERSION 2
#include <arpa/inet.h>
#include <fmt/format.h>
#include <nbdkit-plugin.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "nbdxm/client_allowlist.hpp"
#include "nbdxm/database.hpp"
#include "nbdxm/error.hpp"
#include "nbdxm/export_connector.hpp"
#include "nbdxm/printable.hpp"

#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL

namespace {

using nbdxm::ExportConnection;
using nbdxm::ExportConnector;

nbdxm::ServeOptions options;                 // from .config; read-only once serving starts
nbdxm::ClientAllowlist allowlist;            // allow-from=; empty: any client
std::unique_ptr<ExportConnector> connector;  // from .after_fork to .cleanup

// One open client connection.
struct Handle {
  std::unique_ptr<ExportConnection> connection;
  std::atomic<bool> revocation_logged{false};
};

// nbdkit_error with the whole line printable(): export names come from clients and device paths and reasons from
// the store, and an escape sequence or a line feed in one of them must not reach the log raw.
// noexcept: it is called from catch blocks and from callbacks that return to nbdkit's C code; should escaping fail
// (memory), the line is logged as it is rather than not at all.
__attribute__((format(printf, 1, 2))) void log_error(const char* format, ...) noexcept {
  va_list args;
  va_start(args, format);
  char* line = nullptr;
  const int length = vasprintf(&line, format, args);
  va_end(args);
  const char* text = length < 0 ? format : line;
  try {
    nbdkit_error("%s", nbdxm::printable(text).c_str());
  } catch (...) {
    nbdkit_error("%s", text);
  }
  if (length >= 0) free(line);  // on failure vasprintf leaves `line` undefined
}

int errno_for(const nbdxm::Error& e) {
  switch (e.code()) {
    case nbdxm::ExitCode::not_found:
      return ENOENT;
    case nbdxm::ExitCode::usage:
      return EINVAL;
    case nbdxm::ExitCode::unavailable:
      return ENXIO;
    case nbdxm::ExitCode::conflict:
      return ENODEV;
    default:
      return EIO;
  }
}

// Logs and reports a failed data request; returns -1 for the callback to return.
int fail(Handle* h, const char* what, int err, uint32_t count, uint64_t offset) {
  const nbdxm::NbdExport& served = h->connection->served();
  if (err == ESHUTDOWN) {
    // Logged once per connection: the client may keep sending (the migration client retries each request).
    if (!h->revocation_logged.exchange(true)) {
      log_error("export %s: refusing every request of this connection: %s", served.export_name.c_str(),
                h->connection->revoked_reason().c_str());
    }
  } else if (err != EOPNOTSUPP) {  // EOPNOTSUPP from zero makes nbdkit fall back to writing: not a failure
    const std::string range = count == 0 ? std::string() : fmt::format(" of {} bytes at offset {}", count, offset);
    log_error("export %s: %s%s on %s: %s", served.export_name.c_str(), what, range.c_str(), served.device_path.c_str(),
              strerror(err));
  }
  nbdkit_set_error(err);
  return -1;
}

int fail_exception(const char* what, const char* message) {
  log_error("%s: %s", what, message);
  nbdkit_set_error(EIO);
  return -1;
}

// Runs a data callback's body (returning 0 or an errno value) so that no exception can reach nbdkit.
template <typename Body>
int serve(void* handle, const char* what, uint32_t count, uint64_t offset, Body body) {
  auto* h = static_cast<Handle*>(handle);
  try {
    const int err = body(*h->connection);
    return err == 0 ? 0 : fail(h, what, err, count, offset);
  } catch (const std::exception& e) {
    return fail_exception(what, e.what());
  } catch (...) {
    return fail_exception(what, "unexpected exception");
  }
}

// Runs a callback returning a value (negotiation callbacks) so that no exception can reach nbdkit.
template <typename Result, typename Body>
Result guarded(const char* what, Result on_error, Body body) {
  try {
    return body();
  } catch (const std::exception& e) {
    log_error("%s: %s", what, e.what());
  } catch (...) {
    log_error("%s: unexpected exception", what);
  }
  return on_error;
}

ExportConnection& connection(void* handle) { return *static_cast<Handle*>(handle)->connection; }

// ---- configuration -------------------------------------------------------------------------------------------

int nbdxm_config(const char* key, const char* value) {
  return guarded("config", -1, [&] {
    const std::string k = key;
    if (k == "db") {
      char* absolute = nbdkit_absolute_path(value);  // nbdkit changes directory to / before serving
      if (absolute == nullptr) return -1;
      options.db_path = absolute;
      free(absolute);
    } else if (k == "export") {
      if (*value == '\0') {
        log_error("export= must name an export; leave it out to serve every active export by name");
        return -1;
      }
      options.pinned_export = value;
    } else if (k == "allow-regular-files") {
      const int allow = nbdkit_parse_bool(value);
      if (allow == -1) return -1;
      options.device_rules.allow_regular_files = allow == 1;
    } else if (k == "allow-uncorrelated") {
      const int allow = nbdkit_parse_bool(value);
      if (allow == -1) return -1;
      options.device_rules.allow_uncorrelated = allow == 1;
    } else if (k == "shared") {
      const int shared = nbdkit_parse_bool(value);
      if (shared == -1) return -1;
      options.shared = shared == 1;
    } else if (k == "allow-from") {
      try {
        allowlist = nbdxm::ClientAllowlist::parse(value);
      } catch (const std::exception& e) {
        log_error("allow-from: %s", e.what());
        return -1;
      }
    } else if (k == "counters-dir") {
      char* absolute = nbdkit_absolute_path(value);
      if (absolute == nullptr) return -1;
      options.counters_dir = absolute;
      free(absolute);
    } else if (k == "byid-dir") {
      char* absolute = nbdkit_absolute_path(value);
      if (absolute == nullptr) return -1;
      options.device_rules.byid_dir = absolute;
      free(absolute);
    } else {
      log_error("unknown parameter '%s'; `nbdkit nbdxm --help` lists the parameters", key);
      return -1;
    }
    return 0;
  });
}

int nbdxm_config_complete() {
  if (options.db_path.empty()) {
    log_error("the db=PATH parameter is required: the nbdxm state store to serve exports from");
    return -1;
  }
  if (options.shared && options.pinned_export) {
    log_error("shared=true serves every shared export by name; leave export= out");
    return -1;
  }
  return 0;
}

// Checks only what needs no opening: the store is opened in .after_fork, after nbdkit dropped privileges (-u),
// so that a store the service user cannot read fails here and now rather than working only as root.
int nbdxm_get_ready() {
  struct stat st {};
  if (::stat(options.db_path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
    log_error("state store %s does not exist; create it with `nbdxm --db %s init`", options.db_path.c_str(),
              options.db_path.c_str());
    return -1;
  }
  return 0;
}

// A Unix-socket client: admitted when the allowlist has a rule for its uid or its primary gid (SO_PEERCRED, which
// nbdkit reads for the plugin).
int admit_unix_peer() {
  const int64_t uid = nbdkit_peer_uid();
  const int64_t gid = nbdkit_peer_gid();
  if (uid == -1 || gid == -1) return -1;  // fail closed; nbdkit said why
  if (allowlist.admits_peer(static_cast<uid_t>(uid), static_cast<gid_t>(gid))) return 0;
  log_error("client uid %lld gid %lld refused: not in allow-from %s", static_cast<long long>(uid),
            static_cast<long long>(gid), allowlist.str().c_str());
  return -1;
}

// Refuses a client the allowlist does not admit, before the handshake: by its address (TCP) or its credentials
// (a Unix socket). A list of the other kind admits nobody.
int nbdxm_preconnect(int /*readonly*/) {
  if (allowlist.empty()) return 0;
  sockaddr_storage address{};
  socklen_t length = sizeof address;
  if (nbdkit_peer_name(reinterpret_cast<sockaddr*>(&address), &length) == -1) {
    connector->refused(nbdxm::RefusalCounters::Reason::client_not_allowed);
    return -1;  // fail closed
  }
  if (address.ss_family == AF_UNIX) {
    if (admit_unix_peer() == 0) return 0;
    connector->refused(nbdxm::RefusalCounters::Reason::client_not_allowed);
    return -1;
  }
  if (allowlist.admits(reinterpret_cast<sockaddr*>(&address), length)) return 0;
  connector->refused(nbdxm::RefusalCounters::Reason::client_not_allowed);
  char text[INET6_ADDRSTRLEN] = "?";
  if (address.ss_family == AF_INET) {
    inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(&address)->sin_addr, text, sizeof text);
  } else if (address.ss_family == AF_INET6) {
    inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(&address)->sin6_addr, text, sizeof text);
  }
  log_error("client %s refused: not in allow-from %s", text, allowlist.str().c_str());
  return -1;
}

// Permission problems look alike from SQLite ("unable to open", "attempt to write a readonly database"); say
// what the plugin needs.
std::string with_permission_hint(const std::string& message) {
  for (const char* sign : {"readonly", "unable to open", "permission", "access"}) {
    if (message.find(sign) != std::string::npos) {
      return fmt::format(
          "{} (nbdkit runs as uid {} and opens the store read-only: the store, its directory and its -wal and -shm "
          "files must be readable by that user, and the -wal and -shm files must exist: `nbdxm init` creates them)",
          message, geteuid());
    }
  }
  return message;
}

int nbdxm_after_fork() {
  return guarded("after_fork", -1, [] {
    try {
      // The watcher holds its own lock around every use of the connection (see export_watcher.hpp).
      auto db = nbdxm::Database::open(options.db_path, nbdxm::Database::Access::read_only,
                                      nbdxm::Database::Serialization::by_caller);
      db.require_current_schema();
      connector = std::make_unique<ExportConnector>(options, std::move(db),
                                                    [](const std::string& line) { log_error("%s", line.c_str()); });
    } catch (const std::exception& e) {
      log_error("%s", with_permission_hint(e.what()).c_str());
      return -1;
    }
    connector->watcher().start();
    return 0;
  });
}

void nbdxm_cleanup() {
  guarded("cleanup", 0, [] {
    connector.reset();  // joins the watcher thread; nbdkit has closed every connection by now
    return 0;
  });
}

void nbdxm_dump_plugin() {
  std::printf("nbdxm_version=%s\n", NBDXM_VERSION);
  std::printf("nbdxm_default_byid_dir=%s\n", nbdxm::DeviceRules::kDefaultByIdDir);
  const nbdxm::StoreCheckPace pace;
  std::printf("nbdxm_revocation_poll_ms=%lld\n", static_cast<long long>(pace.interval.count()));
  std::printf("nbdxm_revocation_settle_ms=%lld\n", static_cast<long long>(pace.settle_window.count()));
  std::printf("nbdxm_idle_check_ms=%lld\n", static_cast<long long>(pace.idle_interval.count()));
}

// ---- exports and connections ---------------------------------------------------------------------------------

int nbdxm_list_exports(int /*readonly*/, int /*is_tls*/, struct nbdkit_exports* exports) {
  return guarded("list_exports", -1, [&] {
    for (const auto& e : connector->served_exports()) {
      const std::string description = fmt::format("disk {} of job {}", e.disk_id, e.job_id);
      if (nbdkit_add_export(exports, e.export_name.c_str(), description.c_str()) == -1) return -1;
    }
    return 0;
  });
}

const char* nbdxm_default_export(int /*readonly*/, int /*is_tls*/) {
  return guarded("default_export", static_cast<const char*>(nullptr),
                 [] { return nbdkit_strdup_intern(connector->default_export().c_str()); });
}

void* nbdxm_open(int readonly) {
  try {
    const char* name = nbdkit_export_name();
    auto handle = std::make_unique<Handle>();
    handle->connection = connector->connect(name ? name : "", readonly != 0);
    return handle.release();
  } catch (const nbdxm::Error& e) {
    log_error("%s", e.what());
    errno = errno_for(e);
  } catch (const std::exception& e) {
    log_error("open: %s", e.what());
    errno = EIO;
  } catch (...) {
    log_error("open: unexpected exception");
    errno = EIO;
  }
  return nullptr;
}

void nbdxm_close(void* handle) {
  std::unique_ptr<Handle> h(static_cast<Handle*>(handle));
  const int err = h->connection->finish();
  if (err != 0) {
    // The client is gone and cannot be told; say it where the operator looks.
    log_error("export %s: making the connection's writes durable on %s failed: %s",
              h->connection->served().export_name.c_str(), h->connection->served().device_path.c_str(), strerror(err));
  }
}

int64_t nbdxm_get_size(void* handle) { return connection(handle).backend().size(); }

const char* nbdxm_export_description(void* handle) {
  return guarded("export_description", static_cast<const char*>(nullptr), [&] {
    const auto& e = connection(handle).served();
    const std::string text = fmt::format("disk {} of job {} on volume {}", e.disk_id, e.job_id, e.volume_uuid);
    return nbdkit_strdup_intern(text.c_str());
  });
}

int nbdxm_block_size(void* handle, uint32_t* minimum, uint32_t* preferred, uint32_t* maximum) {
  const nbdxm::BlockSizes sizes = connection(handle).backend().block_sizes();
  *minimum = sizes.minimum;
  *preferred = sizes.preferred;
  *maximum = sizes.maximum;
  return 0;
}

int nbdxm_can_write(void* handle) { return connection(handle).backend().read_only() ? 0 : 1; }
int nbdxm_can_flush(void*) { return 1; }
int nbdxm_can_trim(void* handle) { return nbdxm_can_write(handle); }
int nbdxm_can_zero(void* handle) { return nbdxm_can_write(handle); }
int nbdxm_can_fast_zero(void* handle) { return nbdxm_can_write(handle); }
int nbdxm_can_fua(void*) { return NBDKIT_FUA_NATIVE; }
int nbdxm_can_multi_conn(void*) { return 1; }  // no caching: a flush on one connection covers every connection
int nbdxm_can_cache(void*) { return NBDKIT_CACHE_NATIVE; }
int nbdxm_can_extents(void* handle) { return connection(handle).backend().can_extents() ? 1 : 0; }

// ---- data ------------------------------------------------------------------------------------------------------

int nbdxm_pread(void* handle, void* buf, uint32_t count, uint64_t offset, uint32_t /*flags*/) {
  return serve(handle, "read", count, offset, [&](ExportConnection& c) { return c.read(buf, count, offset); });
}

int nbdxm_pwrite(void* handle, const void* buf, uint32_t count, uint64_t offset, uint32_t flags) {
  return serve(handle, "write", count, offset,
               [&](ExportConnection& c) { return c.write(buf, count, offset, (flags & NBDKIT_FLAG_FUA) != 0); });
}

int nbdxm_flush(void* handle, uint32_t /*flags*/) {
  return serve(handle, "flush", 0, 0, [](ExportConnection& c) { return c.flush(); });
}

int nbdxm_zero(void* handle, uint32_t count, uint64_t offset, uint32_t flags) {
  nbdxm::ZeroFlags zero_flags;
  zero_flags.may_trim = (flags & NBDKIT_FLAG_MAY_TRIM) != 0;
  zero_flags.fua = (flags & NBDKIT_FLAG_FUA) != 0;
  zero_flags.fast = (flags & NBDKIT_FLAG_FAST_ZERO) != 0;
  return serve(handle, "write-zeroes", count, offset,
               [&](ExportConnection& c) { return c.zero(count, offset, zero_flags); });
}

int nbdxm_trim(void* handle, uint32_t count, uint64_t offset, uint32_t flags) {
  return serve(handle, "trim", count, offset,
               [&](ExportConnection& c) { return c.trim(count, offset, (flags & NBDKIT_FLAG_FUA) != 0); });
}

int nbdxm_cache(void* handle, uint32_t count, uint64_t offset, uint32_t /*flags*/) {
  return serve(handle, "cache", count, offset, [&](ExportConnection& c) { return c.prefetch(count, offset); });
}

int nbdxm_extents(void* handle, uint32_t count, uint64_t offset, uint32_t flags, struct nbdkit_extents* extents) {
  return serve(handle, "block status", count, offset, [&](ExportConnection& c) {
    return c.extents(count, offset, (flags & NBDKIT_FLAG_REQ_ONE) != 0,
                     [extents](uint64_t start, uint64_t length, bool hole) {
                       const uint32_t type = hole ? NBDKIT_EXTENT_HOLE | NBDKIT_EXTENT_ZERO : 0;
                       return nbdkit_add_extent(extents, start, length, type) == 0 ? 0 : (errno ? errno : EIO);
                     });
  });
}

struct nbdkit_plugin make_plugin() {
  struct nbdkit_plugin p {};
  p.name = "nbdxm";
  p.longname = "nbdxm export plugin";
  p.version = NBDXM_VERSION;
  p.description =
      "Serves the exports recorded in an nbdxm state store. At every connect the requested export is looked up in\n"
      "the store and its device is verified (type, size, /dev/disk/by-id identity) before it is served; when the\n"
      "export is revoked or remapped in the store, its open connections fail every later request. While it has\n"
      "clients on a block device, the server holds an exclusive claim (O_EXCL) on it, and it refuses a device that\n"
      "is mounted, used as swap, held by device-mapper or md, or claimed by another server or export.";
  p.config = nbdxm_config;
  p.config_complete = nbdxm_config_complete;
  p.config_help =
      "db=PATH                  (required) The nbdxm state store, opened read-only.\n"
      "export=NAME              Serve only this export; a client asking for \"\" gets it.\n"
      "allow-regular-files=BOOL Also serve regular files (default false: block devices only).\n"
      "allow-uncorrelated=BOOL  Also serve mappings without device correlation (default false; tests, demos).\n"
      "byid-dir=DIR             Where identity links are checked (default /dev/disk/by-id).\n"
      "allow-from=CIDR[,...]    Only clients from these IPv4/IPv6 networks may connect (default: any);\n"
      "allow-from=uid:N,gid:N   on a Unix socket: only clients of these uids or primary gids (SO_PEERCRED).\n"
      "shared=BOOL              Serve by name only the exports recorded as shared; list none (default false).\n"
      "counters-dir=DIR         Count each export's requests in DIR/<id>-<created>.bin and record failed syncs\n"
      "                         there for the manager, and every refused connect by reason in\n"
      "                         DIR/refusals.counts (nbdxm serve passes <run-dir>/counters).";
  p.magic_config_key = "db";
  p.get_ready = nbdxm_get_ready;
  p.preconnect = nbdxm_preconnect;
  p.after_fork = nbdxm_after_fork;
  p.cleanup = nbdxm_cleanup;
  p.dump_plugin = nbdxm_dump_plugin;
  p.list_exports = nbdxm_list_exports;
  p.default_export = nbdxm_default_export;
  p.open = nbdxm_open;
  p.close = nbdxm_close;
  p.get_size = nbdxm_get_size;
  p.export_description = nbdxm_export_description;
  p.block_size = nbdxm_block_size;
  p.can_write = nbdxm_can_write;
  p.can_flush = nbdxm_can_flush;
  p.can_trim = nbdxm_can_trim;
  p.can_zero = nbdxm_can_zero;
  p.can_fast_zero = nbdxm_can_fast_zero;
  p.can_fua = nbdxm_can_fua;
  p.can_multi_conn = nbdxm_can_multi_conn;
  p.can_cache = nbdxm_can_cache;
  p.can_extents = nbdxm_can_extents;
  p.pread = nbdxm_pread;
  p.pwrite = nbdxm_pwrite;
  p.flush = nbdxm_flush;
  p.zero = nbdxm_zero;
  p.trim = nbdxm_trim;
  p.cache = nbdxm_cache;
  p.extents = nbdxm_extents;
  return p;
}

struct nbdkit_plugin plugin = make_plugin();

}  // namespace

NBDKIT_REGISTER_PLUGIN(plugin)
