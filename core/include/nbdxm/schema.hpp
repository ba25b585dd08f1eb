#pragma once
// The schema embedded from schema.sql, split into its numbered versions.
#include <string>
#include <string_view>
#include <vector>

namespace nbdxm::schema {

struct Step {
  int version;      // the user_version a store has after this step
  std::string sql;  // the statements that upgrade version-1 to version
};

std::string_view text();    // schema.sql as it was at build time
std::vector<Step> steps();  // in ascending version order
int latest_version();

}  // namespace nbdxm::schema
