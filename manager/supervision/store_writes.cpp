#include "store_writes.hpp"

#include <sqlite3.h>

#include <SQLiteCpp/Exception.h>
#include <algorithm>

#include "serve_log.hpp"

namespace nbdxm::supervision {

using cli::log_event;

namespace {

bool store_locked(const SQLite::Exception& e) {
  const int code = e.getErrorCode() & 0xff;  // the primary result code
  return code == SQLITE_BUSY || code == SQLITE_LOCKED;
}

}  // namespace

void StoreWrites::add(int64_t export_id, std::string what, Write write, Clock::time_point now) {
  queue_.push_back({export_id, std::move(what), std::move(write)});
  if (queue_.size() == 1) {
    next_try_ = now;
    retry(now);
  }
}

void StoreWrites::retry(Clock::time_point now) {
  if (queue_.empty() || now < next_try_) return;
  while (!queue_.empty()) {
    if (!attempt(queue_.front())) {
      next_try_ = now + kRetryInterval;
      return;
    }
    queue_.pop_front();
  }
}

bool StoreWrites::waits(Pending& pending, const std::string& why) {
  if (!pending.logged) {
    log_event("{}: will retry every {} ms: {}", pending.what, kRetryInterval.count(), why);
    pending.logged = true;
  }
  return false;
}

void StoreWrites::flush() {
  next_try_ = Clock::time_point::min();
  retry(Clock::now());
}

bool StoreWrites::attempt(Pending& pending) {
  try {
    pending.write(store_);
    if (pending.logged) log_event("{}: done now", pending.what);
    return true;
  } catch (const StoreBusy& e) {
    return waits(pending, e.what());
  } catch (const SQLite::Exception& e) {
    if (store_locked(e)) return waits(pending, e.what());
    log_event("{}: the store refused it: {}", pending.what, e.what());
    return true;
  } catch (const std::exception& e) {
    log_event("{}: the store refused it: {}", pending.what, e.what());
    return true;
  }
}

bool StoreWrites::waiting_for(int64_t export_id) const {
  return std::any_of(queue_.begin(), queue_.end(), [&](const Pending& p) { return p.export_id == export_id; });
}

StoreWrites::Clock::time_point StoreWrites::next_deadline() const {
  return queue_.empty() ? Clock::time_point::max() : next_try_;
}

}  // namespace nbdxm::supervision
