#include "nbdxm/client_allowlist.hpp"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <grp.h>
#include <netinet/in.h>
#include <pwd.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <optional>
#include <string_view>

#include "nbdxm/error.hpp"

namespace nbdxm {
namespace {

[[noreturn]] void refuse(std::string_view item) {
  throw Error(ExitCode::usage,
              fmt::format("--allow-from item {:?} is not an IPv4 or IPv6 address with an optional /prefix length; "
                          "give addresses or networks separated by commas, e.g. 127.0.0.1 or 10.0.0.0/8,::1",
                          std::string(item)));
}

[[noreturn]] void refuse_peer(std::string_view item) {
  throw Error(ExitCode::usage,
              fmt::format("--allow-from item {:?} is not a uid or gid rule; give uid:N or gid:N with a number or an "
                          "existing user or group name, e.g. uid:1001,gid:nbdxm-clients",
                          std::string(item)));
}

bool is_peer_item(std::string_view item) { return item.starts_with("uid:") || item.starts_with("gid:"); }

// A whole number of at most 32 bits, or nothing.
std::optional<uint32_t> number_of(std::string_view text) {
  uint32_t value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

}  // namespace

ClientAllowlist::Network ClientAllowlist::parse_network(std::string_view item) {
  const auto slash = item.find('/');
  const std::string address(item.substr(0, slash));
  Network network;
  network.family = address.find(':') != std::string::npos ? AF_INET6 : AF_INET;
  if (::inet_pton(network.family, address.c_str(), network.bytes.data()) != 1) refuse(item);
  const int max_prefix = network.family == AF_INET6 ? 128 : 32;
  network.prefix = max_prefix;
  if (slash != std::string_view::npos) {
    const std::string_view digits = item.substr(slash + 1);
    const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), network.prefix);
    if (digits.empty() || ec != std::errc() || end != digits.data() + digits.size() || network.prefix < 0 ||
        network.prefix > max_prefix) {
      refuse(item);
    }
  }
  return network;
}

ClientAllowlist::Peer ClientAllowlist::parse_peer(std::string_view item) {
  Peer peer;
  peer.group = item.starts_with("gid:");
  const std::string name(item.substr(4));
  if (const auto number = number_of(name)) {
    peer.id = *number;
  } else if (name.empty()) {
    refuse_peer(item);
  } else if (peer.group) {
    const group* found = ::getgrnam(name.c_str());
    if (found == nullptr) refuse_peer(item);
    peer.id = found->gr_gid;
  } else {
    const passwd* found = ::getpwnam(name.c_str());
    if (found == nullptr) refuse_peer(item);
    peer.id = found->pw_uid;
  }
  return peer;
}

ClientAllowlist ClientAllowlist::parse(const std::string& list) {
  ClientAllowlist allowlist;
  size_t start = 0;
  for (;;) {
    const size_t comma = list.find(',', start);
    const std::string_view item = std::string_view(list).substr(start, comma - start);
    if (is_peer_item(item)) {
      const Peer peer = parse_peer(item);
      auto& peers = allowlist.peers_;
      if (std::find(peers.begin(), peers.end(), peer) == peers.end()) peers.push_back(peer);
    } else {
      const Network network = parse_network(item);
      auto& networks = allowlist.networks_;
      if (std::find(networks.begin(), networks.end(), network) == networks.end()) networks.push_back(network);
    }
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  if (!allowlist.networks_.empty() && !allowlist.peers_.empty()) {
    throw Error(ExitCode::usage,
                fmt::format("--allow-from {:?} mixes addresses and uid/gid rules; give addresses for a tcp export "
                            "and uid:N or gid:N for a unix export",
                            list));
  }
  return allowlist;
}

std::string ClientAllowlist::str() const {
  std::vector<std::string> items;
  for (const auto& network : networks_) {
    char text[INET6_ADDRSTRLEN];
    ::inet_ntop(network.family, network.bytes.data(), text, sizeof text);
    items.push_back(fmt::format("{}/{}", text, network.prefix));
  }
  for (const auto& peer : peers_) items.push_back(fmt::format("{}:{}", peer.group ? "gid" : "uid", peer.id));
  return fmt::format("{}", fmt::join(items, ","));
}

bool ClientAllowlist::matches(const Network& network, int family, const uint8_t* bytes) {
  if (network.family != family) return false;
  const int whole = network.prefix / 8;
  if (std::memcmp(network.bytes.data(), bytes, static_cast<size_t>(whole)) != 0) return false;
  const int rest = network.prefix % 8;
  if (rest == 0) return true;
  const auto mask = static_cast<uint8_t>(0xff << (8 - rest));
  return (network.bytes[static_cast<size_t>(whole)] & mask) == (bytes[whole] & mask);
}

bool ClientAllowlist::admits(const sockaddr* address, socklen_t length) const {
  int family = address->sa_family;
  const uint8_t* bytes = nullptr;
  if (family == AF_INET && length >= static_cast<socklen_t>(sizeof(sockaddr_in))) {
    bytes = reinterpret_cast<const uint8_t*>(&reinterpret_cast<const sockaddr_in*>(address)->sin_addr);
  } else if (family == AF_INET6 && length >= static_cast<socklen_t>(sizeof(sockaddr_in6))) {
    const auto* v6 = reinterpret_cast<const sockaddr_in6*>(address);
    bytes = v6->sin6_addr.s6_addr;
    if (IN6_IS_ADDR_V4MAPPED(&v6->sin6_addr)) {
      family = AF_INET;
      bytes += 12;
    }
  } else {
    return false;
  }
  return std::any_of(networks_.begin(), networks_.end(),
                     [&](const Network& network) { return matches(network, family, bytes); });
}

bool ClientAllowlist::admits_peer(uid_t uid, gid_t gid) const {
  return std::any_of(peers_.begin(), peers_.end(),
                     [&](const Peer& peer) { return peer.id == (peer.group ? gid : uid); });
}

}  // namespace nbdxm
