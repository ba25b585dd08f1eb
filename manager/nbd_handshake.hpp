#pragma once
// Asking an export's server for its export the way a client does (libnbd: connect, NBD_OPT_GO, disconnect), to know
// it really serves it: a TCP connect alone can reach another program's listener.
#include <string>

namespace nbdxm::cli {

struct HandshakeResult {
  bool ok = false;
  bool refused = false;  // the server answered but refused the export (the plugin's checks failed)
  std::string message;   // libnbd's error when not ok
};

HandshakeResult nbd_handshake(const std::string& address, int port, const std::string& export_name);
// nbd://ADDR:PORT/NAME (an IPv6 address in brackets).
std::string nbd_uri(const std::string& address, int port, const std::string& export_name);

}  // namespace nbdxm::cli
