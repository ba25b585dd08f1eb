#pragma once
// SystemdBus: the few calls of systemd's D-Bus API (org.freedesktop.systemd1) that the systemd backend makes, over
// libsystemd's sd-bus, on the system bus. Method calls are synchronous (systemd answers at once; a job's outcome
// comes later as the JobRemoved signal), except stop_unit_async, whose reply is handled like a signal; signals and
// replies are dispatched by process(), from the manager's poll loop, never from inside a call. A failed call throws
// BusError naming the call, the unit and systemd's (or polkit's) words.
#include <systemd/sd-bus.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace nbdxm::supervision {

class BusError : public std::runtime_error {
 public:
  BusError(const std::string& message, std::string name) : std::runtime_error(message), name_(std::move(name)) {}
  const std::string& name() const {
    return name_;
  }  // the D-Bus error name, e.g. org.freedesktop.DBus.Error.AccessDenied

 private:
  std::string name_;
};

// A unit's state as systemd reports it.
struct UnitState {
  std::string active_state;  // active, activating, deactivating, inactive, failed, reloading
  std::string sub_state;     // e.g. running, auto-restart, listening, dead
  std::string result;        // the unit's Result: success, resources, exit-code, signal, start-limit-hit, ...
  bool active_or_busy() const { return active_state != "inactive" && active_state != "failed"; }
};

// One entry of ListUnitsByPatterns.
struct ListedUnit {
  std::string name;
  std::string active_state;
  std::string sub_state;
};

// A unit property to set at runtime (SetUnitProperties): a string, an unsigned 64-bit number, or a list of device
// nodes each allowed read and write (DeviceAllow=; systemd adds the entries to the unit's list, and an empty list
// empties it).
struct UnitProperty {
  std::string name;
  std::string text;  // when is_text
  uint64_t number = 0;
  bool is_text = false;
  bool is_devices = false;
  std::vector<std::string> devices;  // when is_devices
};

class SystemdBus {
 public:
  using JobRemovedHandler = std::function<void(const std::string& job, const std::string& unit, const std::string&)>;
  using UnitChangedHandler = std::function<void(const std::string& unit_path)>;
  // The reply to an asynchronous job call: the job's object path, or the error (job empty).
  using JobReplyHandler = std::function<void(const std::string& job, const BusError* error)>;
  // The reply to an asynchronous read of NRestarts: the count, or the error.
  using RestartsReplyHandler = std::function<void(uint32_t restarts, const BusError* error)>;

  // Connects to the system bus; throws BusError.
  static std::unique_ptr<SystemdBus> open_system();
  // Whether the system bus answers and systemd is on it (for --supervisor auto).
  static bool systemd_answers();

  SystemdBus(const SystemdBus&) = delete;
  SystemdBus& operator=(const SystemdBus&) = delete;
  ~SystemdBus();

  // Asks systemd for its signals (Manager.Subscribe) and routes JobRemoved and the units' PropertiesChanged (below
  // /org/freedesktop/systemd1/unit) to the handlers.
  void subscribe(JobRemovedHandler on_job_removed, UnitChangedHandler on_unit_changed);

  std::vector<ListedUnit> list_units_by_patterns(const std::vector<std::string>& patterns);
  // Each returns the job's object path.
  std::string start_unit(const std::string& unit);
  std::string stop_unit(const std::string& unit);
  std::string restart_unit(const std::string& unit);
  // StopUnit without waiting for the reply: stops of many units are sent at once and systemd runs their jobs side by
  // side, instead of one reply's round trip (polkit's check included) after another. `on_reply` runs from process();
  // systemd sends the reply before the job's JobRemoved signal, and process() dispatches in order. Throws BusError
  // if the call cannot be sent.
  void stop_unit_async(const std::string& unit, JobReplyHandler on_reply);
  void reset_failed_unit(const std::string& unit);
  void set_unit_properties(const std::string& unit, const std::vector<UnitProperty>& properties);
  UnitState unit_state(const std::string& unit);
  std::string active_state(const std::string& unit);   // ActiveState alone: one call instead of three
  std::string load_state(const std::string& unit);     // LoadState: loaded, not-found, bad-setting, ...
  std::string service_exit(const std::string& unit);   // "status 1", "signal KILL", or "" when none recorded
  uint32_t service_restarts(const std::string& unit);  // NRestarts
  // NRestarts without waiting for the reply (as stop_unit_async): a new manager reads it for every unit it adopts,
  // side by side instead of one round trip after another. Throws BusError if the call cannot be sent.
  void service_restarts_async(const std::string& unit, RestartsReplyHandler on_reply);

  static std::string unit_path(const std::string& unit);     // the unit's object path
  static std::string unit_of_path(const std::string& path);  // its reverse: the unit's name, or "" for another object

  // The manager's poll loop: the bus's fd, the events to poll for, and when process() must run at the latest.
  int fd() const;
  short events() const;
  std::chrono::steady_clock::time_point deadline() const;
  // Dispatches every message that has arrived (handlers run here); never blocks.
  void process();

 private:
  explicit SystemdBus(sd_bus* bus) : bus_(bus) {}
  std::string unit_job_call(const char* method, const std::string& unit);
  std::string unit_string_property(const std::string& unit, const char* interface, const char* property);

  sd_bus* bus_ = nullptr;
  sd_bus_slot* job_removed_slot_ = nullptr;
  sd_bus_slot* properties_slot_ = nullptr;
  JobRemovedHandler on_job_removed_;  // the slots' userdata
  UnitChangedHandler on_unit_changed_;
};

}  // namespace nbdxm::supervision
