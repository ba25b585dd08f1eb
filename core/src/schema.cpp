#include "nbdxm/schema.hpp"

#include <charconv>
#include <stdexcept>

namespace nbdxm::schema {
namespace {
constexpr std::string_view kMarker = "\n-- @version ";
}

std::vector<Step> steps() {
  const std::string_view all = text();
  std::vector<Step> result;
  size_t pos = all.find(kMarker);
  while (pos != std::string_view::npos) {
    const size_t number_start = pos + kMarker.size();
    int version = 0;
    const auto [end, ec] = std::from_chars(all.data() + number_start, all.data() + all.size(), version);
    if (ec != std::errc{}) throw std::logic_error("schema.sql: malformed -- @version marker");
    const size_t body_start = static_cast<size_t>(end - all.data());
    const size_t next = all.find(kMarker, body_start);
    const size_t body_end = next == std::string_view::npos ? all.size() : next;
    result.push_back({version, std::string(all.substr(body_start, body_end - body_start))});
    if (static_cast<int>(result.size()) != version) throw std::logic_error("schema.sql: versions must count from 1");
    pos = next;
  }
  return result;
}

int latest_version() { return static_cast<int>(steps().size()); }

}  // namespace nbdxm::schema
