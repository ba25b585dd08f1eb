#include "systemd_bus.hpp"

#include <fmt/format.h>
#include <poll.h>

#include <cerrno>
#include <cstring>
#include <memory>

namespace nbdxm::supervision {
namespace {

constexpr const char* kDestination = "org.freedesktop.systemd1";
constexpr const char* kManagerPath = "/org/freedesktop/systemd1";
constexpr const char* kManager = "org.freedesktop.systemd1.Manager";
constexpr const char* kUnit = "org.freedesktop.systemd1.Unit";
constexpr const char* kService = "org.freedesktop.systemd1.Service";
constexpr const char* kUnitPrefix = "/org/freedesktop/systemd1/unit";

// sd_bus_error, freed on scope exit.
struct ErrorHolder {
  sd_bus_error error = SD_BUS_ERROR_NULL;
  ~ErrorHolder() { sd_bus_error_free(&error); }
};

struct MessageUnref {
  void operator()(sd_bus_message* m) const { sd_bus_message_unref(m); }
};
using Message = std::unique_ptr<sd_bus_message, MessageUnref>;

[[noreturn]] void fail(const std::string& what, int r, const sd_bus_error* error) {
  if (error != nullptr && sd_bus_error_is_set(error)) {
    throw BusError(fmt::format("{}: {}", what, error->message != nullptr ? error->message : error->name), error->name);
  }
  throw BusError(fmt::format("{}: {}", what, std::strerror(-r)), "");
}

void check(int r, const std::string& what) {
  if (r < 0) fail(what, r, nullptr);
}

std::string read_object_path(sd_bus_message* reply, const std::string& what) {
  const char* path = nullptr;
  check(sd_bus_message_read(reply, "o", &path), what);
  return path;
}

int on_job_removed(sd_bus_message* m, void* userdata, sd_bus_error*) {
  uint32_t id = 0;
  const char* job = nullptr;
  const char* unit = nullptr;
  const char* result = nullptr;
  if (sd_bus_message_read(m, "uoss", &id, &job, &unit, &result) < 0) return 0;
  (*static_cast<SystemdBus::JobRemovedHandler*>(userdata))(job, unit, result);
  return 0;
}

int on_properties_changed(sd_bus_message* m, void* userdata, sd_bus_error*) {
  const char* path = sd_bus_message_get_path(m);
  if (path != nullptr) (*static_cast<SystemdBus::UnitChangedHandler*>(userdata))(path);
  return 0;
}

// What an asynchronous job call needs when its reply comes: the slot's userdata, freed with the slot.
struct PendingJobCall {
  std::string what;
  SystemdBus::JobReplyHandler on_reply;
};

int on_job_reply(sd_bus_message* m, void* userdata, sd_bus_error*) {
  auto& call = *static_cast<PendingJobCall*>(userdata);
  const sd_bus_error* error = sd_bus_message_get_error(m);
  if (error != nullptr) {
    const BusError e(fmt::format("{}: {}", call.what, error->message != nullptr ? error->message : error->name),
                     error->name != nullptr ? error->name : "");
    call.on_reply("", &e);
    return 0;
  }
  const char* path = nullptr;
  if (sd_bus_message_read(m, "o", &path) < 0 || path == nullptr) {
    const BusError e(call.what + ": the reply names no job", "");
    call.on_reply("", &e);
    return 0;
  }
  call.on_reply(path, nullptr);
  return 0;
}

void free_pending_job_call(void* userdata) { delete static_cast<PendingJobCall*>(userdata); }

struct PendingRestartsRead {
  std::string what;
  SystemdBus::RestartsReplyHandler on_reply;
};

int on_restarts_reply(sd_bus_message* m, void* userdata, sd_bus_error*) {
  auto& call = *static_cast<PendingRestartsRead*>(userdata);
  const sd_bus_error* error = sd_bus_message_get_error(m);
  if (error != nullptr) {
    const BusError e(fmt::format("{}: {}", call.what, error->message != nullptr ? error->message : error->name),
                     error->name != nullptr ? error->name : "");
    call.on_reply(0, &e);
    return 0;
  }
  uint32_t restarts = 0;
  if (sd_bus_message_read(m, "v", "u", &restarts) < 0) {
    const BusError e(call.what + ": the reply holds no count", "");
    call.on_reply(0, &e);
    return 0;
  }
  call.on_reply(restarts, nullptr);
  return 0;
}

void free_pending_restarts_read(void* userdata) { delete static_cast<PendingRestartsRead*>(userdata); }

}  // namespace

std::unique_ptr<SystemdBus> SystemdBus::open_system() {
  sd_bus* bus = nullptr;
  const int r = sd_bus_open_system(&bus);
  if (r < 0) throw BusError(fmt::format("cannot connect to the system bus: {}", std::strerror(-r)), "");
  return std::unique_ptr<SystemdBus>(new SystemdBus(bus));
}

bool SystemdBus::systemd_answers() {
  try {
    open_system()->active_state("-.mount");  // any call systemd answers
    return true;
  } catch (const BusError&) {
    return false;
  }
}

SystemdBus::~SystemdBus() {
  sd_bus_slot_unref(job_removed_slot_);
  sd_bus_slot_unref(properties_slot_);
  if (bus_ != nullptr) sd_bus_flush_close_unref(bus_);
}

void SystemdBus::subscribe(JobRemovedHandler on_job_removed_handler, UnitChangedHandler on_unit_changed) {
  on_job_removed_ = std::move(on_job_removed_handler);
  on_unit_changed_ = std::move(on_unit_changed);
  check(sd_bus_match_signal(bus_, &job_removed_slot_, kDestination, kManagerPath, kManager, "JobRemoved",
                            on_job_removed, &on_job_removed_),
        "cannot listen to systemd's JobRemoved signal");
  const std::string rule = fmt::format(
      "type='signal',sender='{}',interface='org.freedesktop.DBus.Properties',member='PropertiesChanged',"
      "path_namespace='{}'",
      kDestination, kUnitPrefix);
  check(sd_bus_add_match(bus_, &properties_slot_, rule.c_str(), on_properties_changed, &on_unit_changed_),
        "cannot listen to systemd's PropertiesChanged signals");
  ErrorHolder error;
  const int r = sd_bus_call_method(bus_, kDestination, kManagerPath, kManager, "Subscribe", &error.error, nullptr, "");
  if (r < 0) fail("cannot subscribe to systemd's signals (Subscribe)", r, &error.error);
}

std::vector<ListedUnit> SystemdBus::list_units_by_patterns(const std::vector<std::string>& patterns) {
  const std::string what = "cannot list systemd's units (ListUnitsByPatterns)";
  sd_bus_message* raw = nullptr;
  check(sd_bus_message_new_method_call(bus_, &raw, kDestination, kManagerPath, kManager, "ListUnitsByPatterns"), what);
  Message call(raw);
  check(sd_bus_message_append_strv(call.get(), nullptr), what);  // any state
  std::vector<const char*> strv;
  for (const auto& p : patterns) strv.push_back(p.c_str());
  strv.push_back(nullptr);
  check(sd_bus_message_append_strv(call.get(), const_cast<char**>(strv.data())), what);
  ErrorHolder error;
  sd_bus_message* reply_raw = nullptr;
  const int r = sd_bus_call(bus_, call.get(), 0, &error.error, &reply_raw);
  if (r < 0) fail(what, r, &error.error);
  Message reply(reply_raw);
  check(sd_bus_message_enter_container(reply.get(), 'a', "(ssssssouso)"), what);
  std::vector<ListedUnit> units;
  const char *name = nullptr, *description = nullptr, *load = nullptr, *active = nullptr, *sub = nullptr,
             *following = nullptr, *path = nullptr, *job_type = nullptr, *job_path = nullptr;
  uint32_t job_id = 0;
  int n = 0;
  while ((n = sd_bus_message_read(reply.get(), "(ssssssouso)", &name, &description, &load, &active, &sub, &following,
                                  &path, &job_id, &job_type, &job_path)) > 0) {
    units.push_back({name, active, sub});
  }
  check(n, what);
  return units;
}

std::string SystemdBus::unit_job_call(const char* method, const std::string& unit) {
  const std::string what = fmt::format("systemd refused {} of {}", method, unit);
  ErrorHolder error;
  sd_bus_message* reply_raw = nullptr;
  const int r = sd_bus_call_method(bus_, kDestination, kManagerPath, kManager, method, &error.error, &reply_raw, "ss",
                                   unit.c_str(), "replace");
  if (r < 0) fail(what, r, &error.error);
  Message reply(reply_raw);
  return read_object_path(reply.get(), what);
}

std::string SystemdBus::start_unit(const std::string& unit) { return unit_job_call("StartUnit", unit); }
std::string SystemdBus::stop_unit(const std::string& unit) { return unit_job_call("StopUnit", unit); }
std::string SystemdBus::restart_unit(const std::string& unit) { return unit_job_call("RestartUnit", unit); }

void SystemdBus::stop_unit_async(const std::string& unit, JobReplyHandler on_reply) {
  auto call = std::make_unique<PendingJobCall>(
      PendingJobCall{fmt::format("systemd refused StopUnit of {}", unit), std::move(on_reply)});
  sd_bus_slot* slot = nullptr;
  const int r = sd_bus_call_method_async(bus_, &slot, kDestination, kManagerPath, kManager, "StopUnit", on_job_reply,
                                         call.get(), "ss", unit.c_str(), "replace");
  check(r, call->what);
  // The bus owns the slot from here (floating): it frees the call after the reply, or when the bus is closed.
  sd_bus_slot_set_destroy_callback(slot, free_pending_job_call);
  call.release();
  sd_bus_slot_set_floating(slot, 1);  // takes a reference of the bus's own
  sd_bus_slot_unref(slot);
}

void SystemdBus::reset_failed_unit(const std::string& unit) {
  ErrorHolder error;
  const int r = sd_bus_call_method(bus_, kDestination, kManagerPath, kManager, "ResetFailedUnit", &error.error, nullptr,
                                   "s", unit.c_str());
  if (r < 0) fail(fmt::format("systemd refused ResetFailedUnit of {}", unit), r, &error.error);
}

namespace {

// A DeviceAllow= property: (sv) with the variant a(ss), each device node with "rw".
void append_devices(sd_bus_message* call, const UnitProperty& p, const std::string& what) {
  check(sd_bus_message_open_container(call, 'r', "sv"), what);
  check(sd_bus_message_append(call, "s", p.name.c_str()), what);
  check(sd_bus_message_open_container(call, 'v', "a(ss)"), what);
  check(sd_bus_message_open_container(call, 'a', "(ss)"), what);
  for (const auto& device : p.devices) check(sd_bus_message_append(call, "(ss)", device.c_str(), "rw"), what);
  check(sd_bus_message_close_container(call), what);
  check(sd_bus_message_close_container(call), what);
  check(sd_bus_message_close_container(call), what);
}

}  // namespace

void SystemdBus::set_unit_properties(const std::string& unit, const std::vector<UnitProperty>& properties) {
  const std::string what = fmt::format("systemd refused SetUnitProperties of {}", unit);
  sd_bus_message* raw = nullptr;
  check(sd_bus_message_new_method_call(bus_, &raw, kDestination, kManagerPath, kManager, "SetUnitProperties"), what);
  Message call(raw);
  check(sd_bus_message_append(call.get(), "sb", unit.c_str(), 1), what);  // runtime: until reboot
  check(sd_bus_message_open_container(call.get(), 'a', "(sv)"), what);
  for (const auto& p : properties) {
    if (p.is_devices) {
      append_devices(call.get(), p, what);
      continue;
    }
    const int r = p.is_text ? sd_bus_message_append(call.get(), "(sv)", p.name.c_str(), "s", p.text.c_str())
                            : sd_bus_message_append(call.get(), "(sv)", p.name.c_str(), "t", p.number);
    check(r, what);
  }
  check(sd_bus_message_close_container(call.get()), what);
  ErrorHolder error;
  const int r = sd_bus_call(bus_, call.get(), 0, &error.error, nullptr);
  if (r < 0) fail(what, r, &error.error);
}

std::string SystemdBus::unit_path(const std::string& unit) {
  char* path = nullptr;
  check(sd_bus_path_encode(kUnitPrefix, unit.c_str(), &path), "cannot name the object of unit " + unit);
  std::string result(path);
  free(path);  // NOLINT: sd-bus allocates with malloc
  return result;
}

std::string SystemdBus::unit_of_path(const std::string& path) {
  char* unit = nullptr;
  if (sd_bus_path_decode(path.c_str(), kUnitPrefix, &unit) <= 0) return "";
  std::string result(unit);
  free(unit);  // NOLINT: sd-bus allocates with malloc
  return result;
}

std::string SystemdBus::unit_string_property(const std::string& unit, const char* interface, const char* property) {
  ErrorHolder error;
  char* value = nullptr;
  const int r = sd_bus_get_property_string(bus_, kDestination, unit_path(unit).c_str(), interface, property,
                                           &error.error, &value);
  if (r < 0) fail(fmt::format("cannot read {} of {}", property, unit), r, &error.error);
  std::string result(value);
  free(value);  // NOLINT
  return result;
}

std::string SystemdBus::active_state(const std::string& unit) {
  return unit_string_property(unit, kUnit, "ActiveState");
}

std::string SystemdBus::load_state(const std::string& unit) { return unit_string_property(unit, kUnit, "LoadState"); }

UnitState SystemdBus::unit_state(const std::string& unit) {
  UnitState state;
  state.active_state = active_state(unit);
  state.sub_state = unit_string_property(unit, kUnit, "SubState");
  const bool socket = unit.size() > 7 && unit.compare(unit.size() - 7, 7, ".socket") == 0;
  state.result = unit_string_property(unit, socket ? "org.freedesktop.systemd1.Socket" : kService, "Result");
  return state;
}

std::string SystemdBus::service_exit(const std::string& unit) {
  ErrorHolder error;
  int32_t code = 0;
  int32_t status = 0;
  const auto path = unit_path(unit);
  int r =
      sd_bus_get_property_trivial(bus_, kDestination, path.c_str(), kService, "ExecMainCode", &error.error, 'i', &code);
  if (r >= 0) {
    r = sd_bus_get_property_trivial(bus_, kDestination, path.c_str(), kService, "ExecMainStatus", &error.error, 'i',
                                    &status);
  }
  if (r < 0) fail(fmt::format("cannot read the exit status of {}", unit), r, &error.error);
  switch (code) {
    case 1:  // CLD_EXITED
      return fmt::format("exit status {}", status);
    case 2:  // CLD_KILLED
    case 3:  // CLD_DUMPED
      return fmt::format("killed by signal {} ({})", status, sigabbrev_np(status) ? sigabbrev_np(status) : "?");
    default:
      return "";
  }
}

uint32_t SystemdBus::service_restarts(const std::string& unit) {
  ErrorHolder error;
  uint32_t restarts = 0;
  const int r = sd_bus_get_property_trivial(bus_, kDestination, unit_path(unit).c_str(), kService, "NRestarts",
                                            &error.error, 'u', &restarts);
  if (r < 0) fail(fmt::format("cannot read NRestarts of {}", unit), r, &error.error);
  return restarts;
}

void SystemdBus::service_restarts_async(const std::string& unit, RestartsReplyHandler on_reply) {
  auto call = std::make_unique<PendingRestartsRead>(
      PendingRestartsRead{fmt::format("cannot read NRestarts of {}", unit), std::move(on_reply)});
  sd_bus_slot* slot = nullptr;
  const int r =
      sd_bus_call_method_async(bus_, &slot, kDestination, unit_path(unit).c_str(), "org.freedesktop.DBus.Properties",
                               "Get", on_restarts_reply, call.get(), "ss", kService, "NRestarts");
  check(r, call->what);
  sd_bus_slot_set_destroy_callback(slot, free_pending_restarts_read);  // as in stop_unit_async
  call.release();
  sd_bus_slot_set_floating(slot, 1);
  sd_bus_slot_unref(slot);
}

int SystemdBus::fd() const { return sd_bus_get_fd(bus_); }

short SystemdBus::events() const {
  const int e = sd_bus_get_events(bus_);
  return static_cast<short>(e < 0 ? POLLIN : e);
}

std::chrono::steady_clock::time_point SystemdBus::deadline() const {
  uint64_t usec = 0;
  if (sd_bus_get_timeout(bus_, &usec) < 0 || usec == UINT64_MAX) return std::chrono::steady_clock::time_point::max();
  // sd-bus's timeouts are CLOCK_MONOTONIC, which is steady_clock's on Linux.
  return std::chrono::steady_clock::time_point(std::chrono::microseconds(usec));
}

void SystemdBus::process() {
  int r = 0;
  while ((r = sd_bus_process(bus_, nullptr)) > 0) {
  }
  check(r, "the connection to the system bus failed");
}

}  // namespace nbdxm::supervision
