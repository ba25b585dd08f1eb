#pragma once
// FakeSupervisor: a scripted ServerSupervisor for the reconciler's unit tests. The issue asks that reconciling and
// restart policy be tested without starting processes: this double records what the reconciler asks and reports
// the events a test scripts. Nothing else in the tests stands in for a real part.
#include <algorithm>
#include <map>
#include <vector>

#include "server_supervisor.hpp"

namespace nbdxm::test {

class FakeSupervisor : public supervision::ServerSupervisor {
 public:
  using Target = supervision::ServerTarget;
  using Event = supervision::ServerEvent;

  std::string kind_name = "systemd";
  std::vector<supervision::RunningServer> running;  // what adopt() finds
  bool serve_at_once = true;                        // serve() and replace() report `serving` at the next advance()
  std::map<int, int> clients_on_port;

  std::vector<Target> served, stopped, replaced, device_changes;  // the calls, in order

  std::string kind() const override { return kind_name; }
  std::vector<supervision::RunningServer> adopt() override { return running; }
  void serve(const Target& target, Clock::time_point) override {
    served.push_back(target);
    if (serve_at_once) emit({Event::Kind::serving, target, "", unit_of(target)});
  }
  void stop(const Target& target, Clock::time_point) override { stopped.push_back(target); }
  void replace(const Target& target, Clock::time_point) override {
    replaced.push_back(target);
    if (serve_at_once) emit({Event::Kind::serving, target, "", unit_of(target)});
  }
  void device_changed(const Target& target, Clock::time_point) override { device_changes.push_back(target); }
  int clients(const Target& target) const override {
    const auto found = clients_on_port.find(target.port);
    return found == clients_on_port.end() ? 0 : found->second;
  }
  void collect_fds(std::vector<pollfd>&) override {}
  Clock::time_point next_deadline() const override { return Clock::time_point::max(); }
  std::vector<Event> advance(Clock::time_point) override { return std::exchange(events_, {}); }
  void shutdown() override {}

  void emit(Event event) { events_.push_back(std::move(event)); }
  static std::string unit_of(const Target& target) {
    return "nbdxm-export@127.0.0.1:" + std::to_string(target.port) + ".service";
  }
  int times_served(const Target& target) const {
    return static_cast<int>(std::count(served.begin(), served.end(), target));
  }

 private:
  std::vector<Event> events_;
};

}  // namespace nbdxm::test
