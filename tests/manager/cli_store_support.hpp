#pragma once
// The CLI store tests run the real nbdxm binary (NBDXM_BINARY, from CMake) on a real store file in a directory of
// their own, and read what it printed from files.
#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "store_test_support.hpp"

namespace nbdxm::test {

using Json = nlohmann::ordered_json;  // keeps the order nbdxm printed

struct CliResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

class CliStoreTest : public ::testing::Test {
 protected:
  // Runs `nbdxm --db <store> args...` (without --db when use_db is false; under wrapper, such as setpriv, when
  // given) and waits for it.
  CliResult run(const std::vector<std::string>& args, const std::vector<std::string>& extra_env = {},
                bool use_db = true, const std::vector<std::string>& wrapper = {});
  // Runs `nbdxm --db <store> --json args...`, expects success and returns the parsed output.
  Json run_json(const std::vector<std::string>& args);
  // Expects a refusal: the exit code, one line on stderr naming the problem (returned without its newline),
  // nothing on stdout, no raw SQLite message, and the store unchanged.
  std::string refused(int exit_code, const std::vector<std::string>& args);

  void init_store();               // `nbdxm init`, expected to succeed
  void add_standard_store_rows();  // add_standard_rows through the library, on the same file
  // Runs f on the store through the library (for what the store commands cannot write, such as exports).
  void with_store(const std::function<void(ExportStore&)>& f);
  std::string state();  // dump of the store, or "no store" when its file does not exist

  TempDir dir_;
  std::string db_ = dir_.file("state.db");

 private:
  int runs_ = 0;
};

}  // namespace nbdxm::test
