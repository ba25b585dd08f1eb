#pragma once
// A CLI11 transform for integer options. CLI11 converts with strtoll and keeps its clamped result, so that
// 99999999999999999999 silently became 9223372036854775807 (and 010 octal eight); this refuses, before conversion,
// anything but a decimal whole number that fits in 64 bits.
#include <CLI/CLI.hpp>

namespace nbdxm::cli {

CLI::Validator whole_number();

}  // namespace nbdxm::cli
