// One home for each value rule: schema.sql's CHECK constraints are the source, and the table of nbdxm/store_rules.hpp
// must name each of them exactly once; each pre-write check of store_values.hpp must answer as the schema does for
// values at the edges of its rule (fed to both: the C++ check, and a real write into a store); and each set of
// statuses or modes in store_values.hpp must be the set the schema's CHECK lists.
#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <SQLiteCpp/Statement.h>
#include <map>
#include <regex>
#include <variant>

#include "nbdxm/store_error.hpp"
#include "nbdxm/store_rules.hpp"
#include "nbdxm/store_values.hpp"
#include "store_test_support.hpp"

namespace nbdxm::test {
namespace {

using Value = std::variant<std::string, int64_t>;

// For each rule with a pre-write check: a write of one value (bound to ?) into the standard store that only this
// rule can refuse, and the values to try, at and just past the edges of the rule.
struct Probe {
  std::string sql;
  std::vector<Value> values;
};

std::string repeated(size_t n, char c = 'a') { return std::string(n, c); }

std::map<std::string, Probe> probes() {
  using values::kMaxDevicePathLength;
  using values::kMaxDiskSizeGb;
  using values::kMaxMappingFieldLength;
  using values::kMaxMappingSize;
  using values::kMaxNameLength;
  const std::string uuid = "11111111-2222-4333-8444-555555555555";
  auto statuses = [](auto set, std::vector<Value> extra) {
    for (auto s : set) extra.emplace_back(std::string(s));
    return extra;
  };
  return {
      {"job_id_format",
       {"INSERT INTO replication_jobs (id, source_vm_id, source_vm_name) VALUES (?, 'v', 'n')",
        {"", "a", repeated(kMaxNameLength), repeated(kMaxNameLength + 1), repeated(1000)}}},
      {"job_status_valid",
       {"UPDATE replication_jobs SET status = ? WHERE id = 'j2'",
        statuses(values::kJobStatuses, {"", "running", "PENDING", "pending "})}},
      {"volume_uuid_canonical",
       {"INSERT INTO device_mappings (volume_uuid, volume_id, vm_id, device_path, size, operation_mode) "
        "VALUES (?, 1, 'a', 'remote', 1, 'failover')",
        {uuid, "ffffffff-ffff-ffff-ffff-ffffffffffff", "11111111-2222-4333-8444-55555555555A",
         "11111111-2222-4333-8444-55555555555", "11111111-2222-4333-8444-5555555555555",
         "{11111111-2222-4333-8444-555555555555}", "111111112222433384445555555555555555",
         "11111111-2222-4333-8444-55555555555g", "1111111-22222-4333-8444-555555555555", ""}}},
      {"mapping_vm_id_format",
       {fmt::format("UPDATE device_mappings SET vm_id = ? WHERE volume_uuid = '{}'", kVolume4),
        {"", "a", repeated(kMaxMappingFieldLength), repeated(kMaxMappingFieldLength + 1)}}},
      {"device_path_length",
       {fmt::format("UPDATE device_mappings SET device_path = ? WHERE volume_uuid = '{}'", kVolume4),
        {"", "r", repeated(kMaxDevicePathLength), repeated(kMaxDevicePathLength + 1)}}},
      {"oma_device_path_normalized",
       {fmt::format("UPDATE device_mappings SET device_path = ? WHERE volume_uuid = '{}'", kVolume3),
        {"/x", "/dev/vdx", "/a/.b", "/a/..b", "/a/b.", "/", "x", "dev/vdx", "/a/", "/a//b", "//a", "/a/./b", "/./a",
         "/a/.", "/a/../b", "/../a", "/a/.."}}},
      {"operation_mode_valid",
       {fmt::format("UPDATE device_mappings SET operation_mode = ? WHERE volume_uuid = '{}'", kVolume3),
        statuses(values::kOperationModes, {"", "OMA", "attached"})}},
      {"mapping_size_range",
       {fmt::format("UPDATE device_mappings SET size = ? WHERE volume_uuid = '{}'", kVolume4),
        {int64_t{-1}, int64_t{0}, int64_t{1}, kMaxMappingSize, kMaxMappingSize + 1}}},
      {"disk_id_format",
       {"UPDATE vm_disks SET disk_id = ? WHERE disk_id = 'd2'",
        {"", "x", repeated(kMaxNameLength), repeated(kMaxNameLength + 1)}}},
      {"disk_size_range",
       {"UPDATE vm_disks SET size_gb = ? WHERE disk_id = 'd2'",
        {int64_t{-1}, int64_t{0}, int64_t{1}, kMaxDiskSizeGb, kMaxDiskSizeGb + 1}}},
      {"export_name_format",
       {"UPDATE nbd_exports SET export_name = ? WHERE export_name = 'e1-old'",
        {"a", "Z", "9A.b_c-d", "a..", repeated(kMaxNameLength), repeated(kMaxNameLength + 1), "", "-a", ".a", "_a",
         "a b", "a/b", "a\n", "a:b", "e\xc3\xa9", "\xc3\xa9"}}},
      {"port_range",
       {"UPDATE nbd_exports SET port = ? WHERE export_name = 'e1-old'",
        {int64_t{-1}, int64_t{0}, int64_t{1}, int64_t{65535}, int64_t{65536}}}},
      {"export_status_valid",
       {"UPDATE nbd_exports SET status = ? WHERE export_name = 'e1'",
        statuses(values::kExportStatuses, {"", "deleted", "Active"})}},
  };
}

std::string shown(const Value& value) {
  return std::holds_alternative<int64_t>(value) ? std::to_string(std::get<int64_t>(value))
                                                : fmt::format("{:?}", std::get<std::string>(value));
}

class StoreRulesTest : public StoreTest {
 protected:
  StoreRulesTest() { add_standard_rows(store_, dir_); }

  // Whether the schema accepts the write; fails the test when a rule other than `constraint` refuses it.
  bool schema_accepts(const std::string& sql, const Value& value, const std::string& constraint) {
    db_.sql().exec("SAVEPOINT probe");
    bool accepted = true;
    try {
      SQLite::Statement q(db_.sql(), sql);
      std::visit([&](const auto& v) { q.bind(1, v); }, value);
      q.exec();
    } catch (const SQLite::Exception& e) {
      accepted = false;
      EXPECT_THAT(e.what(), ::testing::HasSubstr(constraint)) << "another rule refused " << shown(value);
    }
    db_.sql().exec("ROLLBACK TO probe");
    db_.sql().exec("RELEASE probe");
    return accepted;
  }

  std::vector<rules::CheckConstraint> schema_checks() { return rules::check_constraints(db_.sql()); }
};

TEST_F(StoreRulesTest, EveryNamedCheckConstraintHasExactlyOneRule) {
  const auto checks = schema_checks();
  ASSERT_GE(checks.size(), 30u);
  for (const auto& check : checks) {
    const auto same_name = std::count_if(checks.begin(), checks.end(),
                                         [&](const rules::CheckConstraint& c) { return c.name == check.name; });
    EXPECT_EQ(same_name, 1) << "constraint name " << check.name << " is used more than once in schema.sql";
    const auto& all = rules::value_rules();
    const auto rules_of =
        std::count_if(all.begin(), all.end(), [&](const rules::ValueRule& r) { return r.constraint == check.name; });
    EXPECT_EQ(rules_of, 1) << "constraint " << check.name << " of " << check.table
                           << " needs exactly one entry in the table of nbdxm/store_rules.hpp";
    if (const auto* rule = rules::find_value_rule(check.name)) {
      EXPECT_EQ(rule->table, check.table) << check.name;
      EXPECT_FALSE(rule->sentence.empty()) << check.name;
    }
  }
  for (const auto& rule : rules::value_rules()) {
    const bool in_schema = std::any_of(checks.begin(), checks.end(),
                                       [&](const rules::CheckConstraint& c) { return c.name == rule.constraint; });
    EXPECT_TRUE(in_schema) << "the rules table names " << rule.constraint << ", which schema.sql does not have";
    const std::string columns =
        db_.sql()
            .execAndGet(fmt::format("SELECT group_concat(name, ' ') FROM pragma_table_info('{}')", rule.table))
            .getString();
    EXPECT_THAT(" " + columns + " ", ::testing::HasSubstr(fmt::format(" {} ", rule.column))) << rule.constraint;
  }
}

TEST_F(StoreRulesTest, EachPreWriteCheckAnswersAsTheSchemaDoes) {
  const auto all_probes = probes();
  for (const auto& rule : rules::value_rules()) {
    if (!rule.text_check && !rule.number_check) continue;
    const std::string constraint(rule.constraint);
    const auto probe = all_probes.find(constraint);
    ASSERT_NE(probe, all_probes.end()) << "no edge values for the pre-write check of " << constraint;
    for (const Value& value : probe->second.values) {
      const bool cpp = std::holds_alternative<int64_t>(value)
                           ? (rule.number_check && rule.number_check(std::get<int64_t>(value)))
                           : (rule.text_check && rule.text_check(std::get<std::string>(value)));
      EXPECT_EQ(cpp, schema_accepts(probe->second.sql, value, constraint))
          << constraint << ": the C++ check and the schema disagree on " << shown(value);
    }
  }
}

// The quoted words of a CHECK (column IN ('a', 'b')) condition.
std::vector<std::string> listed(const std::string& condition) {
  static const std::regex word("'([^']*)'");
  std::vector<std::string> words;
  for (std::sregex_iterator it(condition.begin(), condition.end(), word), end; it != end; ++it) {
    words.push_back((*it)[1].str());
  }
  return words;
}

template <size_t N>
std::vector<std::string> as_strings(const std::array<std::string_view, N>& set) {
  return {set.begin(), set.end()};
}

TEST_F(StoreRulesTest, EachSetOfStatusesIsTheSchemasSet) {
  std::map<std::string, std::string> conditions;
  for (const auto& check : schema_checks()) conditions[check.name] = check.condition;
  EXPECT_EQ(as_strings(values::kJobStatuses), listed(conditions.at("job_status_valid")));
  EXPECT_EQ(as_strings(values::kExportStatuses), listed(conditions.at("export_status_valid")));
  EXPECT_EQ(as_strings(values::kOperationModes), listed(conditions.at("operation_mode_valid")));
}

// A refused write and `nbdxm check` both speak with the table's sentence.
TEST_F(StoreRulesTest, RefusalsAndCheckUseTheTablesSentence) {
  const std::string sentence = rules::find_value_rule("port_range")->sentence;
  try {
    db_.sql().exec("UPDATE nbd_exports SET port = 0 WHERE export_name = 'e1-old'");
    FAIL() << "port 0 was accepted";
  } catch (const SQLite::Exception& e) {
    EXPECT_EQ(store_error(e).what(), sentence);
  }
  db_.sql().exec("PRAGMA ignore_check_constraints = ON");
  db_.sql().exec("UPDATE nbd_exports SET port = 0 WHERE export_name = 'e1-old'");
  db_.sql().exec("PRAGMA ignore_check_constraints = OFF");
  std::vector<std::string> messages;
  for (const auto& problem : store_.check()) messages.push_back(problem.message);
  EXPECT_THAT(messages, ::testing::ElementsAre("export e1-old has port 0; " + sentence));
}

}  // namespace
}  // namespace nbdxm::test
