#pragma once
// Shared by the state store tests (tests/core/store_*) and the CLI store tests (tests/manager/cli_store_*): a
// private temporary directory, a full dump of a store for before/after comparisons, a small standard store, and a
// bounded wait for an event (tests never assert on timing).
#include <gtest/gtest.h>

#include <SQLiteCpp/Database.h>
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "nbdxm/database.hpp"
#include "nbdxm/export_store.hpp"

namespace nbdxm::test {

// Polls until done() or the timeout; returns done()'s last value.
bool wait_until(const std::function<bool()>& done, std::chrono::milliseconds timeout);

// A new directory of its own (safe under ctest -j), removed with everything in it when the test ends. Made in the
// system's temporary directory, or in `parent` (/dev, for device links).
class TempDir {
 public:
  explicit TempDir(const std::string& parent = "");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Everything a store holds, as text: user_version, every schema object with its SQL, and every row of every table
// in rowid order with each value's type. Two equal dumps mean an unchanged store.
std::string dump(SQLite::Database& db);
std::string dump_file(const std::string& path);  // through a connection of its own

// The environment every test gives an nbdkit it starts: in a sanitizer build, the sanitizer runtime preloaded (nbdkit
// is not built with sanitizers but loads the sanitized plugin), with leak checking off (it cannot work after nbdkit
// drops privileges, and nbdkit's own allocations are not ours; the plugin's code is leak-checked in the unit tests).
std::vector<std::string> nbdkit_environment();
// What nbdkit must not inherit from the test's own environment.
const std::vector<std::string>& nbdkit_unset_environment();

// Creates a file of the given size (sparse) to stand in for a volume's device.
void create_volume_file(const std::string& path, int64_t size);

// A loop device over a file, detached when destroyed (also when the test fails).
class LoopDevice {
 public:
  // Why loop devices cannot be used here, or nullopt when they can.
  static std::optional<std::string> unavailable_reason();
  // `sector_size`: the device's logical sector size (losetup --sector-size); `partitions`: scan the backing file's
  // partition table, making a device node /dev/loopNpK per partition (losetup -P).
  explicit LoopDevice(const std::string& backing_file, uint32_t sector_size = 512, bool partitions = false);
  ~LoopDevice();
  LoopDevice(const LoopDevice&) = delete;
  LoopDevice& operator=(const LoopDevice&) = delete;
  const std::string& path() const { return path_; }
  // Flush requests the device has completed (/sys/block/loopN/stat, field 16 since Linux 5.5).
  uint64_t flushes_completed() const;

 private:
  std::string path_;
};

NewMapping new_mapping(const std::string& volume_uuid, const std::string& device_path, int64_t size,
                       const std::string& mode = "oma");
NewDisk new_disk(const std::string& job_id, const std::string& disk_id, int64_t size_gb);

// Runs sql (raw, on a connection with foreign keys on) and expects the store to refuse it. Returns SQLite's
// message, so that the test can check it was refused by the intended rule; fails the test if the sql was accepted
// or changed anything (full dump compared).
std::string expect_refused(Database& db, const std::string& sql);

// Runs sql with one trigger of the schema dropped, then puts the trigger back exactly as it was: how a problem
// gets past a trigger (another tool, an older schema, a mistake) so that `check` has something to find.
void exec_without_trigger(Database& db, const std::string& trigger, const std::string& sql);

// Runs sql on a connection with foreign keys off, past the triggers that enforce references and cleanups for such
// writers since schema version 3, then puts those triggers back exactly as they were: how a writer with foreign
// keys off left a store of an older version (before these triggers), so that `check` has something to find.
void exec_as_older_writer(Database& db, const std::string& sql);

// A store at an older schema version, as an nbdxm of that version made it (the sections up to `version` only).
void create_store_at_version(const std::string& path, int version);

constexpr int64_t kGiB = int64_t{1} << 30;

// UUIDs of the standard store's volumes.
inline const std::string kVolume1 = "b3bb9310-1b59-4f62-97e8-cefffdfe3804";  // 10 GiB, oma, backs disk d1 of j1
inline const std::string kVolume2 = "7d1c2e9a-0c4b-4d7e-9a51-3f2e1b0c9d8a";  // 20 GiB, oma, backs disk d3 of j2
inline const std::string kVolume3 = "0f9e8d7c-6b5a-4c3d-8e2f-1a0b9c8d7e6f";  // 30 GiB, oma, not linked
inline const std::string kVolume4 = "5a6b7c8d-9e0f-4a1b-8c2d-3e4f5a6b7c8d";  // 40 GiB, failover, not linked

// The standard store: jobs j1 (replicating) and j2 (pending); volumes 1 to 3 'oma' on files dir/vdb..dir/vdd,
// volume 4 'failover' on a placeholder; disks d1 (5 GiB, volume 1) and d2 (10 GiB, unlinked) of j1 and d3
// (20 GiB, volume 2) of j2; live exports e1 (active, port 10809, d1) and e3 (pending, port 10810, d3), and a revoked
// export e1-old of d1 on port 10809.
void add_standard_rows(ExportStore& store, const TempDir& dir);

// A test with its own directory and an initialised store file in it.
class StoreTest : public ::testing::Test {
 protected:
  StoreTest();
  TempDir dir_;
  std::string path_;
  Database db_;
  ExportStore store_;
};

}  // namespace nbdxm::test
