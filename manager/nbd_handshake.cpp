#include "nbd_handshake.hpp"

#include <fmt/format.h>
#include <libnbd.h>

#include <memory>

namespace nbdxm::cli {
namespace {

struct NbdClose {
  void operator()(nbd_handle* h) const { nbd_close(h); }
};

}  // namespace

HandshakeResult nbd_handshake(const std::string& address, int port, const std::string& export_name) {
  std::unique_ptr<nbd_handle, NbdClose> h(nbd_create());
  if (!h) return {false, false, nbd_get_error()};
  if (nbd_set_export_name(h.get(), export_name.c_str()) == -1) return {false, false, nbd_get_error()};
  if (nbd_connect_tcp(h.get(), address.c_str(), std::to_string(port).c_str()) == -1) {
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

std::string nbd_uri(const std::string& address, int port, const std::string& export_name) {
  const bool ipv6 = address.find(':') != std::string::npos;
  return fmt::format("nbd://{}{}{}:{}/{}", ipv6 ? "[" : "", address, ipv6 ? "]" : "", port, export_name);
}

}  // namespace nbdxm::cli
