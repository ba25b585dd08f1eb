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

// SQLite rolls the whole transaction back on some errors (SQLITE_FULL, SQLITE_IOERR, SQLITE_NOMEM): the writes made
// before the failing one are undone, and the ones after it would each commit on their own. The batch is then tried
// again as a whole, as for a locked store.
struct BatchUndone : std::runtime_error {
  using std::runtime_error::runtime_error;
};

bool transaction_gone(Database& db) { return sqlite3_get_autocommit(db.sql().getHandle()) != 0; }

}  // namespace

void StoreWrites::add(int64_t export_id, std::string what, Write write, Clock::time_point now, Settled settled) {
  if (queue_.empty()) next_try_ = now;
  queue_.push_back({export_id, std::move(what), std::move(write), std::move(settled)});
}

void StoreWrites::retry(Clock::time_point now) {
  if (queue_.empty() || now < next_try_) return;
  try {
    WriteTransaction batch(store_.database());  // every write below is a savepoint of it (see WriteTransaction)
    for (Pending& pending : queue_) {
      attempt(pending);
      if (pending.refused && transaction_gone(store_.database())) throw BatchUndone(pending.refusal);
    }
    batch.commit();
  } catch (const StoreBusy& e) {
    return wait(now, e.what());
  } catch (const BatchUndone& e) {
    return wait(now, e.what());
  } catch (const std::exception& e) {
    const auto* sql = dynamic_cast<const SQLite::Exception*>(&e);
    if (sql != nullptr && store_locked(*sql)) return wait(now, e.what());
    // The commit itself failed (an I/O error, say): trying again would change nothing.
    for (Pending& pending : queue_) {
      log_event("{}: the store refused it: {}", pending.what, e.what());
      pending.refused = true;
    }
    settle_all();
    return;
  }
  for (const Pending& pending : queue_) {
    if (pending.logged && !pending.refused) log_event("{}: done now", pending.what);
  }
  settle_all();
}

void StoreWrites::settle_all() {
  std::deque<Pending> settled;
  settled.swap(queue_);  // a `settled` may add writes of its own
  for (Pending& pending : settled) {
    if (pending.refused) ++refused_;
    if (pending.settled) pending.settled(!pending.refused);
  }
}

void StoreWrites::wait(Clock::time_point now, const std::string& why) {
  next_try_ = now + kRetryInterval;
  Pending& pending = queue_.front();
  if (!pending.logged) {
    log_event("{}: will retry every {} ms: {}", pending.what, kRetryInterval.count(), why);
    pending.logged = true;
  }
}

void StoreWrites::flush() {
  next_try_ = Clock::time_point::min();
  retry(Clock::now());
}

void StoreWrites::attempt(Pending& pending) {
  pending.refused = false;  // a batch rolled back for a locked store tries each write again
  try {
    pending.write(store_);
  } catch (const StoreBusy&) {
    throw;
  } catch (const SQLite::Exception& e) {
    if (store_locked(e)) throw;
    pending.refused = true;
    pending.refusal = e.what();
  } catch (const std::exception& e) {
    pending.refused = true;
    pending.refusal = e.what();
  }
  if (pending.refused && !transaction_gone(store_.database())) {
    log_event("{}: the store refused it: {}", pending.what, pending.refusal);
  }
}

bool StoreWrites::waiting_for(int64_t export_id) const {
  return std::any_of(queue_.begin(), queue_.end(), [&](const Pending& p) { return p.export_id == export_id; });
}

StoreWrites::Clock::time_point StoreWrites::next_deadline() const {
  return queue_.empty() ? Clock::time_point::max() : next_try_;
}

}  // namespace nbdxm::supervision
