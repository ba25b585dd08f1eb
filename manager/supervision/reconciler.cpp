#include "reconciler.hpp"

#include <poll.h>
#include <sys/signalfd.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <set>

#include "nbdxm/error.hpp"
#include "nbdxm/store_change_signal.hpp"
#include "serve_log.hpp"
#include "server_command.hpp"

namespace nbdxm::supervision {
namespace {

using namespace std::chrono_literals;
using cli::log_event;

constexpr auto kReadyAtLatest = 10s;  // READY=1 even if some server is still on its way (back-off)

int poll_timeout_ms(std::chrono::steady_clock::time_point now, std::chrono::steady_clock::time_point deadline) {
  if (deadline <= now) return 0;
  const auto ms = std::chrono::ceil<std::chrono::milliseconds>(deadline - now).count();
  return static_cast<int>(std::min<int64_t>(ms, 60'000));
}

int64_t elapsed_ms(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - since).count();
}

// A unix export's server listens on its socket, a tcp export's on its port.
ServerTarget target_of(const NbdExport& e, const std::string& run_dir) {
  if (e.transport == "unix")
    return {e.id, e.export_name, 0, e.created_at, unix_socket_path(run_dir, e.export_name), ""};
  return {e.id, e.export_name, e.port, e.created_at, "", ""};
}

// The live exports that have a server of their own, by id: tcp and unix ones (a shared export is served by the
// manager's shared server).
std::map<int64_t, NbdExport> with_own_server(std::vector<NbdExport> live) {
  std::map<int64_t, NbdExport> result;
  for (auto& e : live) {
    if (e.transport != "shared") result.emplace(e.id, std::move(e));
  }
  return result;
}

// The manager's settings with the export's own: who may reach it.
ServerSettings settings_for(const ServerSettings& manager, const NbdExport& e) {
  ServerSettings settings = manager;
  settings.tls = e.tls;
  settings.allow_from = e.allowed_clients().value_or("");
  return settings;
}

std::string describe(const ServerTarget& target) {
  return fmt::format("export {} ({})", target.export_name, listener_of(target));
}

}  // namespace

Reconciler::Reconciler(const ServerSettings& settings, const PortRange& ports, ExportStore& store,
                       ServerSupervisor& supervisor, std::shared_ptr<ManagerCounters> counters)
    : settings_(settings),
      ports_(ports, settings.listen_address),
      store_(store),
      supervisor_(supervisor),
      writes_(store),
      folder_(counters_dir(settings.run_dir), writes_, [this] { look_wanted_ = true; }),
      counters_(std::move(counters)) {}

int Reconciler::run(int signal_fd) {
  const auto started = Clock::now();
  begin(started);
  const std::unique_ptr<StoreChangeSignal> store_signal = watch_store_changes(
      settings_.db_path, StoreCheckPace{}.interval, [](const std::string& line) { log_event("{}", line); });
  StoreCheckSchedule schedule(StoreCheckPace{}, store_signal != nullptr, started);
  store_.database().set_busy_timeout(kStoreWait);  // from here on the loop must not wait long
  bool ready = false;
  for (;;) {
    auto now = Clock::now();
    if (!ready && (settled() || now - started >= kReadyAtLatest)) {
      const auto c = counts();
      log_event("ready after {} ms ({} supervisor): {} exports served ({} adopted), {} starting, {} failed",
                elapsed_ms(started), supervisor_.kind(), c.serving, adopted_, c.starting, c.failed);
      sd_notify(0, "READY=1");
      ready = true;
      report_status(true);
    }

    const bool listening = schedule.listening(now);  // see StoreCheckSchedule
    std::vector<pollfd> fds{{signal_fd, POLLIN, 0}, {listening ? store_signal->fd() : -1, POLLIN, 0}};
    auto deadline = std::min({schedule.next_check(now), next_check(), writes_.next_deadline(),
                              supervisor_.next_deadline(), folder_.next_deadline()});
    if (store_failing_since_ || look_wanted_) deadline = std::min(deadline, now + kStoreRetry);
    if (shared_ && std::any_of(shared_->recorded.begin(), shared_->recorded.end(),
                               [](const auto& entry) { return entry.second.ended.has_value(); })) {
      deadline = std::min(deadline, now + kStoreRetry);  // an ended shared life waits for its connections to close
    }
    supervisor_.collect_fds(fds);
    if (::poll(fds.data(), fds.size(), poll_timeout_ms(now, deadline)) < 0 && errno != EINTR) {
      throw std::runtime_error(fmt::format("poll: {}", std::strerror(errno)));
    }
    if (fds[0].revents & POLLIN) {
      signalfd_siginfo info{};
      if (::read(signal_fd, &info, sizeof info) == sizeof info) {
        log_event("received {}; stopping the manager", strsignal(static_cast<int>(info.ssi_signo)));
      }
      store_.database().set_busy_timeout(Database::kBusyTimeout);  // exiting: a write may wait as a command's does
      return finish();
    }

    now = Clock::now();
    const bool due = now >= schedule.next_check(now);
    if (store_signal && ((fds[1].revents & POLLIN) || due) && store_signal->drain()) schedule.store_written(now);
    // Checked at every wakeup, not only when due: data_version is a read of shared memory, and a server that
    // exited may be one that the store no longer wants.
    check(now);
    schedule.checked(now);
    advance(Clock::now());
    report_status(false);
  }
}

void Reconciler::begin(Clock::time_point now) {
  adopt(now);
  look(now);
  // What the supervisor reported while the servers were being started (the direct backend reports each start at
  // once; systemd's signals arrive meanwhile) is taken in before the loop first counts: when starting hundreds of
  // servers outlasts kReadyAtLatest, the ready line would otherwise count every one of them as starting.
  advance(Clock::now());
  if (!store_failing_since_) remove_ended_keys();
  std::set<CounterFolder::Life> running;
  for (const auto& [id, served] : served_) running.insert({id, served.target.created_at});
  for (const auto& target : stopping_) running.insert({target.export_id, target.created_at});  // retired when stopped
  if (shared_) {  // served by the shared server, or ending there
    for (const auto& [life, e] : shared_->live) running.insert(life);
    for (const auto& [life, recorded] : shared_->recorded) running.insert(life);
  }
  folder_.retire_all_but(running, now);
}

// The keys of exports that ended while no manager ran (or of servers whose stop a crash cut short), and the
// temporary files of key writes that a crash cut short (no write runs yet: this manager has not started one).
void Reconciler::remove_ended_keys() {
  std::set<std::string> live;
  for (const auto& [id, served] : served_) live.insert(tls_psk_path(settings_.db_path, served.target));
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(tls_key_dir(settings_.db_path), ec)) {
    const std::string name = entry.path().filename().string();
    if (entry.path().extension() == ".tmp") {
      log_event("removing {}: a TLS key write that did not finish", name);
      remove_tls_psk(entry.path().string());
    } else if (entry.path().extension() == ".psk" && !live.contains(entry.path().string())) {
      log_event("removing the TLS key {}: its export's life has ended", name);
      remove_tls_psk(entry.path().string());
    }
  }
}

void Reconciler::look(Clock::time_point now) {
  try {
    look_wanted_ = false;
    next_unannounced_ = now + kResync;
    const int64_t version = store_.database().data_version();  // first: a commit during the read is looked at next
    sync(now);
    data_version_ = version;
    note_device_dirs();
    follow_device_nodes(now);
    if (store_failing_since_) {
      log_event("the store can be read again after {} ms", elapsed_ms(*store_failing_since_));
      store_failing_since_.reset();
    }
  } catch (const std::exception& e) {
    // A locked or briefly unreadable store must not take the manager (or any server) down, nor stall the servers
    // it keeps: they are still advanced, and the store is tried again kStoreRetry later.
    store_read_failed(now, e);
  }
}

void Reconciler::check(Clock::time_point now) {
  int64_t version = 0;
  try {
    version = store_.database().data_version();
  } catch (const std::exception& e) {
    store_read_failed(now, e);
    return;
  }
  if (version != data_version_ || look_wanted_ || store_failing_since_) return look(now);
  if (now < next_unannounced_) return;
  next_unannounced_ = now + kResync;
  follow_device_nodes(now);
  replace_idle_stale(now);
}

// The directories whose entries decide what the served device paths resolve to: the path's own (udev's by-id link
// is an entry there) and the node's.
void Reconciler::note_device_dirs() {
  device_dirs_.clear();
  for (const auto& [id, served] : served_) {
    for (const auto* path : {&served.device, &served.node}) {
      if (!path->empty()) device_dirs_.insert(std::filesystem::path(*path).parent_path().string());
    }
  }
}

// Every served device path is resolved again only when one of those directories changed (or a new one is among
// them): a look follows every commit of every writer, and resolving 1,000 paths at each cost more than the rest
// of the look. A path whose row changed is resolved by the look itself (write_spec).
void Reconciler::follow_device_nodes(Clock::time_point now) {
  if (!device_stamps_.changed(device_dirs_)) return;
  for (auto& [id, served] : served_) {
    if (served.phase == Served::Phase::starting || served.phase == Served::Phase::serving) {
      follow_device_node(served, now);
    }
  }
}

void Reconciler::store_read_failed(Clock::time_point now, const std::exception& e) {
  counters_->store_reads_failed.fetch_add(1, std::memory_order_relaxed);
  if (!store_failing_since_) {
    log_event("cannot read the store (will retry every {} ms): {}", kStoreRetry.count(), e.what());
    store_failing_since_ = now;
  }
}

void Reconciler::advance(Clock::time_point now) {
  for (const auto& event : supervisor_.advance(now)) handle(event, now);
  end_shared_lives(now);
  folder_.advance(now);
  writes_.retry(Clock::now());
  counters_->store_writes_refused.store(writes_.refused(), std::memory_order_relaxed);
}

int Reconciler::finish() {
  supervisor_.shutdown();
  const auto now = Clock::now();
  for (const auto& event : supervisor_.advance(now)) handle(event, now);
  writes_.flush();
  return static_cast<int>(std::count_if(
      served_.begin(), served_.end(), [](const auto& entry) { return entry.second.phase == Served::Phase::serving; }));
}

void Reconciler::serve_shared(const ServerTarget& target) {
  shared_ = SharedServer{};
  shared_->target = target;
}

ServerSettings Reconciler::shared_settings() const {
  ServerSettings settings = settings_;
  settings.shared = true;
  return settings;
}

namespace {

ServerTarget life_target(const NbdExport& e) { return {e.id, e.export_name, e.port, e.created_at, "", ""}; }

void add_device(std::vector<std::string>& devices, const std::string& device) {
  if (!device.empty() && std::find(devices.begin(), devices.end(), device) == devices.end()) devices.push_back(device);
}

}  // namespace

void Reconciler::sync_shared(const std::vector<NbdExport>& live, Clock::time_point now) {
  SharedServer& shared = *shared_;
  shared.live.clear();
  for (const auto& e : live) {
    if (e.transport == "shared") shared.live.emplace(CounterFolder::Life{e.id, e.created_at}, e);
  }
  // Lives no longer live (revoked, failed, deleted, created anew): their server cuts their connections; they end
  // once those are closed (end_shared_lives). The others follow their mapping.
  for (auto& [life, recorded] : shared.recorded) {
    if (recorded.ended) continue;
    const auto still = shared.live.find(life);
    if (still == shared.live.end()) {
      recorded.ended = now;
      log_event("export {} (shared) is no longer live: its devices are synced once its connections are closed",
                recorded.e.export_name);
      continue;
    }
    recorded.e = still->second;
    add_device(recorded.devices, recorded.e.device_path);
  }
  if (shared.serving) {
    const std::string listener = server_instance(shared_settings(), shared.target);
    for (const auto& [life, e] : shared.live) {
      SharedLife& recorded = shared.recorded.try_emplace(life, SharedLife{e, {}, std::nullopt, false}).first->second;
      add_device(recorded.devices, e.device_path);
      if (recorded.in_store) continue;
      recorded.in_store = true;
      writes_.add(
          e.id, fmt::format("export {} (shared): recording it served", e.export_name),
          [e, kind = supervisor_.kind(), unit = shared.unit, listener](ExportStore& store) {
            store.record_server_serving(e.id, kind, unit, listener, e.created_at);
          },
          now);
    }
  }
  end_shared_lives(now);
  write_shared_spec(now);
  if (!shared.started) {
    shared.started = true;
    supervisor_.serve(shared.target, now);
  }
}

void Reconciler::end_shared_lives(Clock::time_point now) {
  if (!shared_) return;
  SharedServer& shared = *shared_;
  bool ended = false;
  for (auto it = shared.recorded.begin(); it != shared.recorded.end();) {
    const SharedLife& life = it->second;
    if (!life.ended) {
      ++it;
      continue;
    }
    // A connection still open may have a write in flight, acknowledged once it lands: the sync must come after it.
    // (A server that is not serving has none; one that died may have left its count above 0: hence the bound.)
    const uint64_t open = folder_.connections_open(life_target(life.e));
    if (open > 0 && shared.serving && now - *life.ended < kSharedEndWait) {
      ++it;
      continue;
    }
    if (open > 0 && shared.serving) {
      log_event("export {} (shared): {} connections still open {} s after its end; syncing its devices now",
                life.e.export_name, open, kSharedEndWait.count());
    }
    end_shared_life(life, now);
    it = shared.recorded.erase(it);
    ended = true;
  }
  if (ended) write_shared_spec(now);
}

void Reconciler::end_shared_life(const SharedLife& life, Clock::time_point now) {
  const NbdExport& gone = life.e;
  log_event("export {} (shared): syncing {} and clearing its record", gone.export_name, fmt::join(life.devices, ", "));
  const auto synced = sync_devices(life.devices);
  for (const auto& failure : synced.failures)
    log_event("export {} (shared): cannot sync {}", gone.export_name, failure);
  const ServerTarget target = life_target(gone);
  try {
    record_sync_failures(settings_.run_dir, target, synced);  // folded into the store with the file, below
  } catch (const std::exception& e) {
    log_event("export {} (shared): cannot record the failed sync as a durability failure: {}", gone.export_name,
              e.what());
  }
  folder_.retire(target, now);
  writes_.add(
      gone.id, fmt::format("export {} (shared): recording its end", gone.export_name),
      [gone](ExportStore& store) { store.record_server_stopped(gone.id, gone.created_at); }, now);
}

// The lives of the adopted shared server, as its spec names them with every device each was mapped to: the live ones
// are recorded served again once it serves (the records of this manager's start are cleared), the others, ended while
// no manager ran, end as any ended life does: once their connections are closed, their devices are synced.
void Reconciler::adopt_shared_lives(Clock::time_point now) {
  SharedServer& shared = *shared_;
  ServerSpec spec;
  try {
    spec = read_server_spec(server_spec_path(shared_settings(), shared.target));
  } catch (const std::exception& e) {
    log_event("the shared server: cannot read its spec, so the exports it served cannot be ended: {}", e.what());
    return;
  }
  std::map<CounterFolder::Life, NbdExport> live;
  for (auto& e : store_.live_exports()) {
    if (e.transport == "shared") live.emplace(CounterFolder::Life{e.id, e.created_at}, std::move(e));
  }
  for (const auto& l : spec.lives) {
    const CounterFolder::Life life{l.export_id, l.created_at};
    const auto [it, added] = shared.recorded.try_emplace(life);
    SharedLife& recorded = it->second;
    add_device(recorded.devices, l.device);
    if (!added) continue;
    recorded.in_store = false;
    if (const auto found = live.find(life); found != live.end()) {
      recorded.e = found->second;
      continue;
    }
    recorded.e.id = l.export_id;
    recorded.e.export_name = l.export_name;
    recorded.e.created_at = l.created_at;
    recorded.e.device_path = l.device;
    recorded.ended = now;
    log_event("export {} (shared) ended while no manager ran: its devices are synced once its connections are closed",
              l.export_name);
  }
}

void Reconciler::write_shared_spec(Clock::time_point now) {
  SharedServer& shared = *shared_;
  // No current device: the shared server serves every device of its spec at once. Its devices are those of the
  // lives it serves or may serve (the live ones, recorded or not yet) and of those still ending.
  ServerSpec spec{shared_settings(), shared.target, {}, ""};
  const auto add_life = [&spec](const NbdExport& e, const std::vector<std::string>& devices) {
    for (const auto& device : devices) {
      add_device(spec.devices, device);
      spec.lives.push_back({e.id, e.created_at, e.export_name, device});
    }
  };
  for (const auto& [life, recorded] : shared.recorded) add_life(recorded.e, recorded.devices);
  for (const auto& [life, e] : shared.live) {
    if (!shared.recorded.contains(life) && !e.device_path.empty()) add_life(e, {e.device_path});
  }
  if (shared.started && spec == shared.spec) return;
  try {
    write_server_spec(server_spec_path(shared_settings(), shared.target), spec);
    shared.spec = spec;
  } catch (const std::exception& e) {
    log_event("the shared server: cannot write its spec: {}", e.what());
    return;
  }
  if (shared.started) supervisor_.device_changed(shared.target, now);
}

void Reconciler::handle_shared(const ServerEvent& event, Clock::time_point now) {
  SharedServer& shared = *shared_;
  switch (event.kind) {
    case ServerEvent::Kind::serving:
    case ServerEvent::Kind::restarted:
      if (!event.reason.empty()) log_event("the shared server was restarted: {}", event.reason);
      shared.serving = true;
      shared.unit = event.unit;
      look_wanted_ = true;  // its exports are recorded served at the next look
      break;
    case ServerEvent::Kind::port_unavailable:
    case ServerEvent::Kind::gave_up:
      log_event("the shared server on {} cannot serve: {}", server_instance(shared_settings(), shared.target),
                event.reason);
      shared.serving = false;
      // Fail closed: its exports are failed with the reason (their devices are synced once the store says so).
      for (const auto& [life, recorded] : shared.recorded) {
        if (recorded.ended) continue;
        const NbdExport& e = recorded.e;
        const int64_t id = e.id;
        writes_.add(
            id, fmt::format("export {} (shared): marking the export failed", e.export_name),
            [this, id, created_at = e.created_at,
             reason = "the shared server cannot serve: " + event.reason](ExportStore& store) {
              store.fail_export(id, reason, created_at);
              look_wanted_ = true;  // once committed too: a look before the commit would not see the failure
            },
            now);
      }
      look_wanted_ = true;
      break;
    case ServerEvent::Kind::stopped:
      shared.serving = false;
      break;
  }
}

void Reconciler::adopt(Clock::time_point now) {
  const auto running = supervisor_.adopt();
  const std::map<int64_t, NbdExport> live = with_own_server(store_.live_exports());
  std::set<int64_t> kept;
  for (const auto& r : running) {
    if (shared_ && r.target == shared_->target && r.settings == shared_settings()) {
      log_event("the shared server on {}: adopted{}", server_instance(r.settings, r.target),
                r.unit.empty() ? "" : " (unit " + r.unit + ")");
      shared_->started = true;
      adopt_shared_lives(now);
      supervisor_.serve(r.target, now);
      continue;
    }
    const auto e = live.find(r.target.export_id);
    if (e == live.end() || !(target_of(e->second, settings_.run_dir) == r.target) ||
        served_.contains(r.target.export_id)) {
      log_event("{}: its server{} serves no live export there: stopping it", describe(r.target),
                r.unit.empty() ? "" : " (unit " + r.unit + ")");
      supervisor_.stop(r.target, now);
      stopping_.push_back(r.target);
      continue;
    }
    Served& served = served_[r.target.export_id];
    served.target = r.target;
    served.spec_settings = r.settings;
    served.wanted = settings_for(settings_, e->second);
    if (!(r.settings == served.wanted)) served.stale = describe_difference(r.settings, served.wanted);
    log_event("{}: adopted its server{}{}", describe(r.target), r.unit.empty() ? "" : " (unit " + r.unit + ")",
              served.stale ? "; it runs with other settings: " + *served.stale : "");
    write_spec(served, e->second.device_path);
    supervisor_.serve(r.target, now);
    // The mapping moved while no manager ran (or the unit was started by an nbdxm whose units could open every
    // block device): its unit is let open the current device alone.
    if (r.device != e->second.device_path) supervisor_.device_changed(r.target, now);
    kept.insert(r.target.export_id);
    ++adopted_;
    if (served.stale && narrows_access(r.settings, served.wanted)) replace(served, now);
  }
  // Records of servers that no backend runs any more (an earlier manager's, gone with it).
  writes_.add(
      0, "clearing the records of servers no longer running",
      [kept](ExportStore& store) { store.forget_servers(kept); }, now);
}

void Reconciler::sync(Clock::time_point now) {
  const std::vector<NbdExport> live = store_.live_exports();
  if (shared_) sync_shared(live, now);
  const std::map<int64_t, NbdExport> desired = with_own_server(live);

  for (auto it = served_.begin(); it != served_.end();) {
    Served& served = it->second;
    const auto want = desired.find(it->first);
    if (want != desired.end() && keeps_serving(served, want->second)) {
      const NbdExport& e = want->second;
      if (e.status == "pending" && served.phase == Served::Phase::serving && !writes_.waiting_for(e.id)) {
        log_event("{}: is pending again in the store while its server runs; recording the server again",
                  describe(served.target));
        on_serving(served, ServerEvent{ServerEvent::Kind::serving, served.target, "", ""}, now);
      }
      if (!e.device_path.empty() && e.device_path != served.device) {
        write_spec(served, e.device_path);
        supervisor_.device_changed(served.target, now);
      }
      follow_access(served, e, now);
      ++it;
      continue;
    }
    if (want != desired.end() && served.phase == Served::Phase::failed) {
      log_event("{} is {} again: starting it anew", describe(target_of(want->second, settings_.run_dir)),
                want->second.status);
    } else if (served.phase != Served::Phase::failed && served.phase != Served::Phase::moving) {
      log_event("{} is {}: stopping its server", describe(served.target),
                want == desired.end() ? "no longer live" : "now on another port or name, or created anew");
    }
    // A server given up on is stopped too: the backend may still hold its units or its instance (a backend that
    // has forgotten it answers `stopped` at once). A moving one the backend has forgotten already.
    if (served.phase != Served::Phase::moving) {
      supervisor_.stop(served.target, now);
      stopping_.push_back(served.target);
    }
    it = served_.erase(it);
  }
  for (const auto& [id, e] : desired) {
    if (!served_.contains(id)) start(e, now);
  }
  replace_idle_stale(now);
}

bool Reconciler::keeps_serving(const Served& served, const NbdExport& e) const {
  if (!(served.target == target_of(e, settings_.run_dir)))
    return false;  // another name or port, or the row was created anew
  // A server given up on leaves the export live only until its record of the failure is written; once it is, a
  // live export means another writer made it live again.
  return served.phase != Served::Phase::failed || writes_.waiting_for(e.id);
}

// Another writer changed who may reach a served export: its server is replaced at once when the change narrows
// access, otherwise once it has no client (replace_idle_stale).
void Reconciler::follow_access(Served& served, const NbdExport& e, Clock::time_point now) {
  const ServerSettings wanted = settings_for(settings_, e);
  if (wanted == served.wanted) return;
  served.wanted = wanted;
  if (served.spec_settings == wanted) {
    served.stale.reset();
  } else {
    served.stale = describe_difference(served.spec_settings, wanted);
    log_event("{}: who may reach it changed ({})", describe(served.target), *served.stale);
  }
  writes_.add(
      served.target.export_id, fmt::format("{}: recording its settings", describe(served.target)),
      [target = served.target, stale = served.stale](ExportStore& store) {
        store.record_server_settings_stale(target.export_id, stale, target.created_at);
      },
      now);
  if (served.stale && !served.replacing && served.phase == Served::Phase::serving &&
      narrows_access(served.spec_settings, wanted)) {
    replace(served, now);
  }
}

void Reconciler::start(const NbdExport& e, Clock::time_point now) {
  Served& served = served_[e.id];
  served.target = target_of(e, settings_.run_dir);
  served.wanted = settings_for(settings_, e);
  served.spec_settings = served.wanted;
  try {
    write_spec(served, e.device_path);
  } catch (const std::exception& ex) {
    on_gave_up(served, ServerEvent{ServerEvent::Kind::gave_up, served.target, ex.what(), ""}, now);
    return;
  }
  supervisor_.serve(served.target, now);
}

void Reconciler::write_spec(Served& served, const std::string& device) {
  if (served.spec_settings.tls) {
    ensure_tls_psk(tls_psk_path(settings_.db_path, served.target), served.target.export_name);
  }
  const std::string path = server_spec_path(settings_, served.target);
  write_server_spec(path, merged_server_spec(path, served.spec_settings, served.target, device));
  served.device = device;
  served.node = resolved_device(device);
}

void Reconciler::replace(Served& served, Clock::time_point now) {
  log_event("{}: replacing its server, which runs with other settings ({}), {}", describe(served.target),
            served.stale.value_or(""),
            narrows_access(served.spec_settings, served.wanted) ? "at once: the change narrows access"
                                                                : "now that it has no client");
  served.spec_settings = served.wanted;
  write_spec(served, served.device);
  served.replacing = true;
  supervisor_.replace(served.target, now);
}

// The same path names another node now (udev made its by-id link after the export was served, or moved it): under
// systemd the unit may open only the node the path resolves to, so it is told again.
void Reconciler::follow_device_node(Served& served, Clock::time_point now) {
  if (const std::string node = resolved_device(served.device); node != served.node) {
    served.node = node;
    supervisor_.device_changed(served.target, now);
  }
}

void Reconciler::replace_idle_stale(Clock::time_point now) {
  for (auto& [id, served] : served_) {
    if (!served.stale || served.replacing || served.phase != Served::Phase::serving) continue;
    if (supervisor_.clients(served.target) == 0) replace(served, now);
  }
}

void Reconciler::handle(const ServerEvent& event, Clock::time_point now) {
  if (shared_ && event.target == shared_->target) return handle_shared(event, now);
  if (event.kind == ServerEvent::Kind::stopped) {
    on_stopped(event, now);
    return;
  }
  const auto found = served_.find(event.target.export_id);
  if (found == served_.end() || !(found->second.target == event.target)) return;  // no longer wanted: being stopped
  Served& served = found->second;
  switch (event.kind) {
    case ServerEvent::Kind::serving:
      on_serving(served, event, now);
      break;
    case ServerEvent::Kind::restarted:
      // A server whose first start failed is serving now for the first time.
      if (served.phase != Served::Phase::serving) on_serving(served, event, now);
      counters_->server_restarts.fetch_add(1, std::memory_order_relaxed);
      log_event("{}: its server was restarted: {}", describe(event.target), event.reason);
      writes_.add(
          event.target.export_id, fmt::format("{}: recording the restart", describe(event.target)),
          [target = event.target, reason = event.reason](ExportStore& store) {
            store.record_server_restarted(target.export_id, reason, target.created_at);
          },
          now);
      break;
    case ServerEvent::Kind::port_unavailable:
      on_port_unavailable(served, event, now);
      break;
    case ServerEvent::Kind::gave_up:
      on_gave_up(served, event, now);
      break;
    case ServerEvent::Kind::stopped:
      break;
  }
}

void Reconciler::on_serving(Served& served, const ServerEvent& event, Clock::time_point now) {
  served.phase = Served::Phase::serving;
  served.replacing = false;
  // Who may reach the export can have changed while this server started (another writer turned TLS on, say): what
  // it runs with is its spec's settings, compared anew.
  if (served.spec_settings == served.wanted) {
    served.stale.reset();
  } else {
    served.stale = describe_difference(served.spec_settings, served.wanted);
  }
  writes_.add(
      served.target.export_id, fmt::format("{}: recording its server", describe(served.target)),
      [target = served.target, kind = supervisor_.kind(), unit = event.unit,
       address = served.target.socket.empty() ? settings_.listen_address : served.target.socket,
       stale = served.stale](ExportStore& store) {
        store.record_server_serving(target.export_id, kind, unit, address, target.created_at);
        if (stale) store.record_server_settings_stale(target.export_id, stale, target.created_at);
      },
      now);
  if (served.stale && narrows_access(served.spec_settings, served.wanted)) replace(served, now);
}

void Reconciler::on_port_unavailable(Served& served, const ServerEvent& event, Clock::time_point now) {
  served.phase = Served::Phase::moving;  // the supervisor has forgotten it; served anew once the store has moved it
  writes_.add(
      served.target.export_id, fmt::format("{}: moving it to another port", describe(served.target)),
      [this, target = served.target, reason = event.reason](ExportStore& store) {
        std::optional<int> port;
        try {
          port = store.move_export_port(target.export_id, target.port, target.created_at, ports_);
        } catch (const Error& e) {
          const std::string why = fmt::format("{}; and no other port is free: {}", reason, e.what());
          log_event("{}: marking the export failed: {}", describe(target), why);
          store.fail_export(target.export_id, why, target.created_at);
          look_wanted_ = true;
          return;
        }
        if (port) log_event("{}: {}; moved to port {}", describe(target), reason, *port);
        look_wanted_ = true;  // this manager's own write: data_version does not change for it
      },
      now);
}

void Reconciler::on_gave_up(Served& served, const ServerEvent& event, Clock::time_point now) {
  served.phase = Served::Phase::failed;
  counters_->servers_given_up.fetch_add(1, std::memory_order_relaxed);
  log_event("{}: marking the export failed: {}", describe(served.target), event.reason);
  writes_.add(
      served.target.export_id, fmt::format("{}: marking the export failed", describe(served.target)),
      [this, target = served.target, reason = event.reason](ExportStore& store) {
        store.record_server_stopped(target.export_id, target.created_at, reason);
        store.fail_export(target.export_id, reason, target.created_at);
        look_wanted_ = true;  // this manager's own write: data_version does not change for it
      },
      now);
}

void Reconciler::on_stopped(const ServerEvent& event, Clock::time_point now) {
  const auto found = std::find(stopping_.begin(), stopping_.end(), event.target);
  const bool asked = found != stopping_.end();
  if (asked) stopping_.erase(found);
  const auto served = served_.find(event.target.export_id);
  if (served != served_.end() && served->second.target == event.target) {
    // A stop asked for while the target is served again (a failed export made live again): the stopped server is
    // the old one; the new one, its record and its spec stay.
    if (asked) return;
    served_.erase(served);  // stopped at shutdown
  }
  // The export's life has ended: its key opens nothing any more. (A server stopped at shutdown keeps it: the export
  // is still live, for the next manager.)
  if (asked) remove_tls_psk(tls_psk_path(settings_.db_path, event.target));
  folder_.retire(event.target, now, /*keep_file=*/!asked);
  // A reason: the stop's own steps failed (the device sync, say); the operator must see it in `export show`.
  std::optional<std::string> failure;
  if (!event.reason.empty()) {
    log_event("{}: its server stopped, but: {}", describe(event.target), event.reason);
    failure = event.reason;
  }
  writes_.add(
      event.target.export_id, fmt::format("{}: recording the stop of its server", describe(event.target)),
      [target = event.target, failure](ExportStore& store) {
        store.record_server_stopped(target.export_id, target.created_at, failure);
      },
      now);
  // The spec goes with its server, unless a server of another target has taken the instance since.
  const std::string path = server_spec_path(settings_, event.target);
  try {
    if (read_server_spec(path).target == event.target) std::filesystem::remove(path);
  } catch (const std::exception&) {
    // None there: nothing to remove.
  }
}

bool Reconciler::settled() const {
  return std::all_of(served_.begin(), served_.end(),
                     [](const auto& entry) { return entry.second.phase != Served::Phase::starting; });
}

Reconciler::Counts Reconciler::counts() const {
  Counts c;
  for (const auto& [id, served] : served_) {
    switch (served.phase) {
      case Served::Phase::serving:
        ++c.serving;
        break;
      case Served::Phase::failed:
        ++c.failed;
        break;
      case Served::Phase::starting:
      case Served::Phase::moving:
        ++c.starting;
        break;
    }
  }
  c.stopping = static_cast<int>(stopping_.size());
  return c;
}

void Reconciler::report_status(bool force) {
  const auto c = counts();
  std::string status = fmt::format("serving {} exports on {}", c.serving, settings_.listen_address);
  if (c.starting > 0) status += fmt::format(", {} starting", c.starting);
  if (c.stopping > 0) status += fmt::format(", {} stopping", c.stopping);
  if (c.failed > 0) status += fmt::format(", {} failed", c.failed);
  if (!force && status == last_status_) return;
  last_status_ = status;
  sd_notifyf(0, "STATUS=%s", status.c_str());
}

}  // namespace nbdxm::supervision
