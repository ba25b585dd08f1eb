#pragma once
// Where the previous generation's database is: `mariadb://[USER@]HOST[:PORT]/DATABASE` or
// `mariadb://[USER@]/DATABASE?socket=PATH` (a local socket). The password never appears here: it comes from the
// environment (NBDXM_IMPORT_PASSWORD).
#include <optional>
#include <string>

namespace nbdxm::legacy {

struct LegacyUri {
  std::optional<std::string> user;
  std::string host;   // empty with a socket
  unsigned port = 0;  // 0: the connector's default (3306)
  std::string database;
  std::string socket;  // empty with a host

  // Throws Error(usage) naming the URI and the expected forms.
  static LegacyUri parse(const std::string& uri);
  // The URI without secrets, for messages.
  std::string display() const;
};

}  // namespace nbdxm::legacy
