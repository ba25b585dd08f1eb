#pragma once
// The manager's log: one line per event on standard error (journald under systemd, which adds the time).
#include <fmt/format.h>

#include <cstdio>
#include <utility>

namespace nbdxm::cli {

template <typename... Args>
void log_event(fmt::format_string<Args...> format, Args&&... args) {
  fmt::print(stderr, "nbdxm serve: {}\n", fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace nbdxm::cli
