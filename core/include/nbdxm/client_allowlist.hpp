#pragma once
// An export's client allowlist (`nbdxm export create --allow-from`): IPv4 and IPv6 networks. The plugin checks each
// client's address against it before the handshake (`allow-from=` parameter, .preconnect): nbdkit 1.32's ip filter
// as Debian 12 builds it cannot parse an address (it is built without inet_pton and refuses every address rule).
#include <sys/socket.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace nbdxm {

class ClientAllowlist {
 public:
  // Comma-separated ADDRESS[/PREFIX] items. Throws Error(usage) naming the first bad item and the fix.
  static ClientAllowlist parse(const std::string& list);

  // The list as it is recorded: each address as inet_ntop writes it, the prefix length always given, duplicates
  // dropped, comma-separated.
  std::string str() const;
  bool empty() const { return networks_.empty(); }
  // Whether a client at this address may connect. An IPv4 client seen on an IPv6 socket (::ffff:a.b.c.d) is matched
  // as IPv4. A socket of another family (a Unix socket) is not an address this list speaks of: false.
  bool admits(const sockaddr* address, socklen_t length) const;

 private:
  struct Network {
    int family = AF_INET;
    std::array<uint8_t, 16> bytes{};
    int prefix = 0;
    bool operator==(const Network&) const = default;
  };
  static bool matches(const Network& network, int family, const uint8_t* bytes);
  std::vector<Network> networks_;
};

}  // namespace nbdxm
