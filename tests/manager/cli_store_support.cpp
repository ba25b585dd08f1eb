#include "cli_store_support.hpp"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "nbdxm/child_process.hpp"

namespace nbdxm::test {
namespace {

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

CliResult CliStoreTest::run(const std::vector<std::string>& args, const std::vector<std::string>& extra_env,
                            bool use_db, const std::vector<std::string>& wrapper) {
  SpawnOptions options;
  options.argv = wrapper;
  options.argv.push_back(NBDXM_BINARY);
  if (use_db) options.argv.insert(options.argv.end(), {"--db", db_});
  options.argv.insert(options.argv.end(), args.begin(), args.end());
  options.extra_env = extra_env;
  const int run = ++runs_;
  options.stdout_path = dir_.file(fmt::format("run-{}.out", run));
  options.stderr_path = dir_.file(fmt::format("run-{}.err", run));
  CliResult result;
  result.exit_code = run_to_completion(options, std::chrono::seconds(60));
  result.out = read_text(*options.stdout_path);
  result.err = read_text(*options.stderr_path);
  return result;
}

Json CliStoreTest::run_json(const std::vector<std::string>& args) {
  std::vector<std::string> json_args{"--json"};
  json_args.insert(json_args.end(), args.begin(), args.end());
  const CliResult result = run(json_args);
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.err, "");
  try {
    return Json::parse(result.out);
  } catch (const Json::exception& e) {
    ADD_FAILURE() << "not JSON (" << e.what() << "): " << result.out;
    return {};
  }
}

std::string CliStoreTest::refused(int exit_code, const std::vector<std::string>& args) {
  const std::string before = state();
  const CliResult result = run(args);
  EXPECT_EQ(result.exit_code, exit_code) << result.err;
  EXPECT_EQ(result.out, "");
  EXPECT_THAT(result.err, ::testing::StartsWith("nbdxm"));
  EXPECT_THAT(result.err, ::testing::EndsWith("\n"));
  EXPECT_EQ(std::count(result.err.begin(), result.err.end(), '\n'), 1) << "not one line: " << result.err;
  for (const char* raw : {"constraint failed", "SQLite", "sqlite", "UNIQUE", "FOREIGN KEY"}) {
    EXPECT_THAT(result.err, ::testing::Not(::testing::HasSubstr(raw)));
  }
  EXPECT_EQ(before, state()) << "a refusal changed the store";
  return result.err.substr(0, result.err.find('\n'));
}

void CliStoreTest::init_store() {
  const CliResult result = run({"init"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
}

void CliStoreTest::add_standard_store_rows() {
  with_store([this](ExportStore& store) { add_standard_rows(store, dir_); });
}

void CliStoreTest::with_store(const std::function<void(ExportStore&)>& f) {
  Database db = Database::open(db_, Database::Access::read_write);
  ExportStore store(db);
  f(store);
}

std::string CliStoreTest::state() { return std::filesystem::exists(db_) ? dump_file(db_) : "no store"; }

}  // namespace nbdxm::test
