#include "legacy_uri.hpp"

#include <fmt/format.h>

#include <charconv>
#include <string_view>

#include "nbdxm/error.hpp"

namespace nbdxm::legacy {
namespace {

constexpr std::string_view kScheme = "mariadb://";

[[noreturn]] void bad_uri(const std::string& uri, std::string_view why) {
  throw Error(ExitCode::usage,
              fmt::format("source {:?} is not a usable URI: {}; expected mariadb://[USER@]HOST[:PORT]/DATABASE or "
                          "mariadb:///DATABASE?socket=PATH (password from NBDXM_IMPORT_PASSWORD)",
                          uri, why));
}

bool plain_name(std::string_view s) { return !s.empty() && s.find_first_of("/?@:#%& \t") == std::string_view::npos; }

unsigned parse_port(const std::string& uri, std::string_view text) {
  unsigned port = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), port);
  if (ec != std::errc{} || end != text.data() + text.size() || port < 1 || port > 65535) {
    bad_uri(uri, fmt::format("port {:?} is not a number from 1 to 65535", text));
  }
  return port;
}

}  // namespace

LegacyUri LegacyUri::parse(const std::string& uri) {
  std::string_view rest(uri);
  if (!rest.starts_with(kScheme)) bad_uri(uri, "it must start with mariadb://");
  rest.remove_prefix(kScheme.size());
  const size_t slash = rest.find('/');
  if (slash == std::string_view::npos) bad_uri(uri, "it names no database");
  std::string_view authority = rest.substr(0, slash);
  std::string_view path = rest.substr(slash + 1);
  LegacyUri result;
  if (const size_t at = authority.find('@'); at != std::string_view::npos) {
    if (!plain_name(authority.substr(0, at))) bad_uri(uri, "the user name is empty or has reserved characters");
    result.user = std::string(authority.substr(0, at));
    authority.remove_prefix(at + 1);
  }
  if (const size_t q = path.find('?'); q != std::string_view::npos) {
    const std::string_view query = path.substr(q + 1);
    path = path.substr(0, q);
    if (!query.starts_with("socket=") || query.size() == 7 || query.find('&') != std::string_view::npos) {
      bad_uri(uri, "the only query it takes is socket=PATH");
    }
    result.socket = std::string(query.substr(7));
    if (result.socket.front() != '/') bad_uri(uri, "the socket path must be absolute");
  }
  if (!plain_name(path)) bad_uri(uri, "the database name is empty or has reserved characters");
  result.database = std::string(path);
  if (const size_t colon = authority.rfind(':'); colon != std::string_view::npos) {
    result.port = parse_port(uri, authority.substr(colon + 1));
    authority = authority.substr(0, colon);
  }
  result.host = std::string(authority);
  if (result.socket.empty() == result.host.empty()) {
    bad_uri(uri, result.socket.empty() ? "it names neither a host nor a socket" : "it names both a host and a socket");
  }
  if (!result.socket.empty() && result.port != 0) bad_uri(uri, "a socket takes no port");
  return result;
}

std::string LegacyUri::display() const {
  const std::string user_part = user ? *user + "@" : "";
  if (!socket.empty()) return fmt::format("mariadb://{}/{}?socket={}", user_part, database, socket);
  return fmt::format("mariadb://{}{}{}/{}", user_part, host, port ? fmt::format(":{}", port) : "", database);
}

}  // namespace nbdxm::legacy
