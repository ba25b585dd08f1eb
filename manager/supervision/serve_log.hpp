#pragma once
// The manager's log: one line per event on standard error (journald under systemd, which adds the time). Store
// values in an event are printable() with the rest of its line, so that one event stays one line.
#include <fmt/format.h>

#include <cstdio>
#include <utility>

#include "nbdxm/printable.hpp"

namespace nbdxm::cli {

template <typename... Args>
void log_event(fmt::format_string<Args...> format, Args&&... args) {
  fmt::print(stderr, "nbdxm serve: {}\n", printable(fmt::format(format, std::forward<Args>(args)...)));
}

}  // namespace nbdxm::cli
