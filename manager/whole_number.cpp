#include "whole_number.hpp"

#include <fmt/format.h>

#include <charconv>
#include <cstdint>
#include <limits>

namespace nbdxm::cli {

CLI::Validator whole_number() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        int64_t value = 0;
        const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
        if (ec == std::errc() && end == text.data() + text.size()) {
          text = std::to_string(value);  // decimal, as CLI11 reads it: 010 is ten, not octal eight
          return "";
        }
        return fmt::format("{} is not a whole number from {} to {}", text, std::numeric_limits<int64_t>::min(),
                           std::numeric_limits<int64_t>::max());
      },
      "INTEGER");
}

}  // namespace nbdxm::cli
