#pragma once
// The value rules of the state store, one entry per named CHECK constraint of schema.sql: the one place that says
// in the user's terms what each constraint requires, and which pre-write check of store_values.hpp (if any) tests a
// value against it. schema.sql stays the source of every rule: the integrity check (`nbdxm check`) reads each
// condition from the schema itself (check_constraints), a refused write is explained by the sentence here, and
// tests/core/store_rules_test.cpp proves that this table names every constraint exactly once and that each C++ check
// answers as the schema does for values at the edges of its rule. (Generating the C++ checks from the SQL at build
// time would need an SQL expression compiler; a test that compares them catches the same drift.)
#include <SQLiteCpp/Database.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace nbdxm::rules {

struct ValueRule {
  std::string_view constraint;  // CONSTRAINT name in schema.sql
  std::string_view table;
  std::string_view column;  // the column shown when a row breaks the rule
  std::string sentence;     // the rule in the user's terms
  // The check nbdxm applies before it writes the column (store_values.hpp), for a text or an integer column.
  bool (*text_check)(std::string_view) = nullptr;
  bool (*number_check)(int64_t) = nullptr;
};

const std::vector<ValueRule>& value_rules();
// The rule of a CHECK constraint, or nullptr for a name the schema does not have.
const ValueRule* find_value_rule(std::string_view constraint);

// A named CHECK constraint as the schema of `db` defines it.
struct CheckConstraint {
  std::string table;
  std::string name;
  std::string condition;  // the SQL expression between the parentheses of CHECK (...)
};
// Every named CHECK constraint of the tables of `db`, in the order of the schema.
std::vector<CheckConstraint> check_constraints(SQLite::Database& db);

}  // namespace nbdxm::rules
