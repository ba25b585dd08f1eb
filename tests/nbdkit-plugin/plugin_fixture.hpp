#pragma once
// A test fixture with a store, volumes (files or loop devices) and helpers shared by the plugin's test files.
#include <gtest/gtest.h>

#include <chrono>
#include <iostream>
#include <memory>
#include <string>
#include <thread>

#include "plugin_harness.hpp"

namespace nbdxm::test {

// A sparse file, a loop device over one with 512-byte sectors, or with 4096-byte logical sectors (the alignment
// that write-zeroes and trim must respect on such a device).
enum class Backing { file, loop, loop4k };

inline bool is_loop(Backing backing) { return backing != Backing::file; }

inline std::string backing_name(const ::testing::TestParamInfo<Backing>& info) {
  switch (info.param) {
    case Backing::file:
      return "File";
    case Backing::loop:
      return "LoopDevice";
    case Backing::loop4k:
      return "LoopDevice4kSectors";
  }
  return "Unknown";
}

// A volume: a sparse file, served either as it is or through a loop device.
class Volume {
 public:
  Volume(const TempDir& dir, const std::string& name, Backing backing, int64_t size = kGiB)
      : backing_file_(dir.file(name + ".img")) {
    create_volume_file(backing_file_, size);
    if (is_loop(backing)) loop_ = std::make_unique<LoopDevice>(backing_file_, backing == Backing::loop4k ? 4096 : 512);
  }
  const std::string& device() const { return loop_ ? loop_->path() : backing_file_; }
  const std::string& backing_file() const { return backing_file_; }
  const LoopDevice* loop() const { return loop_.get(); }

 private:
  std::string backing_file_;
  std::unique_ptr<LoopDevice> loop_;
};

class PluginTest : public ::testing::Test {
 protected:
  TempDir dir_;
  TestStore store_{dir_.file("state.db")};

  std::unique_ptr<NbdkitServer> serve(std::vector<std::string> params = {"allow-regular-files=true"},
                                      std::vector<std::string> nbdkit_options = {}) {
    return std::make_unique<NbdkitServer>(dir_, store_.path(), std::move(params), std::move(nbdkit_options));
  }

  // Connects to `export_name`, expects a refusal whose log line contains `reason`, and no open of `watched`.
  void expect_refused(NbdkitServer& server, const std::string& export_name, const std::vector<std::string>& watched,
                      const std::string& reason) {
    OpenWatch watch(watched);
    const auto error = NbdClient::connect_error(server.socket(), export_name);
    ASSERT_TRUE(error.has_value()) << "the plugin served " << export_name;
    const std::string log = server.log();
    const size_t at = log.find(reason);
    ASSERT_NE(at, std::string::npos) << "expected \"" << reason << "\" in nbdkit's log:\n" << log;
    const size_t line_start = log.rfind('\n', at) + 1;
    std::cout << "refusal logged: " << log.substr(line_start, log.find('\n', at) - line_start) << "\n";
    EXPECT_EQ(watch.opens(), 0) << "a refused connect opened the device";
  }
};

class BackedPluginTest : public PluginTest, public ::testing::WithParamInterface<Backing> {
 protected:
  void SetUp() override {
    if (is_loop(GetParam())) {
      if (auto reason = LoopDevice::unavailable_reason()) GTEST_SKIP() << *reason;
    }
  }
  std::unique_ptr<Volume> volume(const std::string& name, int64_t size = kGiB) {
    return std::make_unique<Volume>(dir_, name, GetParam(), size);
  }
};

// Polls `condition` until it holds or `limit` passes; returns whether it held.
template <typename Condition>
bool eventually(Condition condition, std::chrono::milliseconds limit = std::chrono::seconds(5)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!condition()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

}  // namespace nbdxm::test
