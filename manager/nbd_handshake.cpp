#include "nbd_handshake.hpp"

#include <fmt/format.h>
#include <libnbd.h>

#include <cctype>
#include <memory>
#include <string_view>

namespace nbdxm::cli {
namespace {

struct NbdClose {
  void operator()(nbd_handle* h) const { nbd_close(h); }
};

}  // namespace

HandshakeResult nbd_handshake(const NbdEndpoint& endpoint, const std::string& export_name,
                              const std::string& tls_psk_file) {
  std::unique_ptr<nbd_handle, NbdClose> h(nbd_create());
  if (!h) return {false, false, nbd_get_error()};
  if (nbd_set_export_name(h.get(), export_name.c_str()) == -1) return {false, false, nbd_get_error()};
  if (!tls_psk_file.empty() &&
      (nbd_set_tls(h.get(), LIBNBD_TLS_REQUIRE) == -1 || nbd_set_tls_username(h.get(), export_name.c_str()) == -1 ||
       nbd_set_tls_psk_file(h.get(), tls_psk_file.c_str()) == -1)) {
    return {false, false, nbd_get_error()};
  }
  const int connected = endpoint.socket.empty()
                            ? nbd_connect_tcp(h.get(), endpoint.address.c_str(), std::to_string(endpoint.port).c_str())
                            : nbd_connect_unix(h.get(), endpoint.socket.c_str());
  if (connected == -1) {
    const std::string message = nbd_get_error();
    // The server answered the handshake but refused this export (the plugin refuses at open; libnbd reports the
    // server's error reply to NBD_OPT_GO, or "has no export named" for NBD_REP_ERR_UNKNOWN).
    const bool refused = message.find("server replied with error") != std::string::npos ||
                         message.find("has no export named") != std::string::npos;
    return {false, refused, message};
  }
  nbd_shutdown(h.get(), 0);
  return {true, false, {}};
}

namespace {

// A path as a URI query value: export names are [A-Za-z0-9._-], nothing to encode there; a path may hold anything.
std::string uri_path(const std::string& path) {
  std::string encoded;
  for (const unsigned char c : path) {
    encoded += std::isalnum(c) != 0 || std::string_view("/._-~").find(static_cast<char>(c)) != std::string_view::npos
                   ? std::string(1, static_cast<char>(c))
                   : fmt::format("%{:02X}", c);
  }
  return encoded;
}

}  // namespace

std::string nbd_uri(const NbdEndpoint& endpoint, const std::string& export_name, const std::string& tls_psk_file) {
  const std::string user = tls_psk_file.empty() ? "" : export_name + "@";
  const std::string key = tls_psk_file.empty() ? "" : "tls-psk-file=" + uri_path(tls_psk_file);
  const std::string scheme = tls_psk_file.empty() ? "nbd" : "nbds";
  if (!endpoint.socket.empty()) {
    return fmt::format("{}+unix://{}/{}?socket={}{}{}", scheme, user, export_name, uri_path(endpoint.socket),
                       key.empty() ? "" : "&", key);
  }
  const bool ipv6 = endpoint.address.find(':') != std::string::npos;
  const std::string host = fmt::format("{}{}{}:{}", ipv6 ? "[" : "", endpoint.address, ipv6 ? "]" : "", endpoint.port);
  return fmt::format("{}://{}{}/{}{}{}", scheme, user, host, export_name, key.empty() ? "" : "?", key);
}

}  // namespace nbdxm::cli
