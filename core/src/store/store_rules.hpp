#pragma once
// Internal to the store: the user-facing sentence for each named CHECK constraint of schema.sql, shared by the
// error translation (a refused write) and the integrity check (a row that breaks it anyway).
#include <optional>
#include <string_view>

namespace nbdxm::rules {

std::optional<std::string_view> check_constraint_sentence(std::string_view constraint_name);

}  // namespace nbdxm::rules
