#pragma once
// An export's client allowlist (`nbdxm export create --allow-from`): IPv4 and IPv6 networks for a TCP export, or
// uid:N and gid:N rules for a Unix-socket export. The plugin checks each client against it before the handshake
// (`allow-from=` parameter, .preconnect): a network against the client's address (nbdkit 1.32's ip filter as Debian
// 12 builds it cannot parse an address and refuses every address rule), a uid or gid rule against the client's
// credentials as the kernel gives them for a Unix socket (SO_PEERCRED, nbdkit_peer_uid/gid): its uid and its primary
// gid (SO_PEERCRED carries no supplementary groups).
#include <sys/socket.h>
#include <sys/types.h>

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace nbdxm {

class ClientAllowlist {
 public:
  // Comma-separated items: ADDRESS[/PREFIX], or uid:N / gid:N where N is a number or a user or group name (resolved
  // here, to its number). Networks and uid/gid rules do not mix: a list is for one transport. Throws Error(usage)
  // naming the first bad item and the fix.
  static ClientAllowlist parse(const std::string& list);

  // The list as it is recorded: each address as inet_ntop writes it, the prefix length always given, uid and gid
  // rules as numbers, duplicates dropped, comma-separated.
  std::string str() const;
  bool empty() const { return networks_.empty() && peers_.empty(); }
  // Whether the list holds uid/gid rules (for a Unix-socket export) rather than networks (for a TCP export).
  bool for_unix_peers() const { return !peers_.empty(); }
  // Whether a client at this address may connect. An IPv4 client seen on an IPv6 socket (::ffff:a.b.c.d) is matched
  // as IPv4. A socket of another family (a Unix socket) is not an address this list speaks of: false.
  bool admits(const sockaddr* address, socklen_t length) const;
  // Whether a client with these credentials (of a Unix socket) may connect: its uid or its gid is listed.
  bool admits_peer(uid_t uid, gid_t gid) const;

 private:
  struct Network {
    int family = AF_INET;
    std::array<uint8_t, 16> bytes{};
    int prefix = 0;
    bool operator==(const Network&) const = default;
  };
  struct Peer {
    bool group = false;  // gid:N, else uid:N
    uint32_t id = 0;
    bool operator==(const Peer&) const = default;
  };
  static bool matches(const Network& network, int family, const uint8_t* bytes);
  static Network parse_network(std::string_view item);
  static Peer parse_peer(std::string_view item);
  std::vector<Network> networks_;
  std::vector<Peer> peers_;
};

}  // namespace nbdxm
