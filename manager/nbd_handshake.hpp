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

// Where a server listens: a TCP address and port, or a Unix socket (`socket` set).
struct NbdEndpoint {
  std::string address;
  int port = 0;
  std::string socket;
};

// With a non-empty `tls_psk_file` the handshake requires TLS with that key, the export's name as the identity.
HandshakeResult nbd_handshake(const NbdEndpoint& endpoint, const std::string& export_name,
                              const std::string& tls_psk_file = {});
// nbd://ADDR:PORT/NAME (an IPv6 address in brackets), or nbd+unix:///NAME?socket=PATH; with a key file, the URI of
// a TLS export as libnbd programs (nbdinfo, nbdcopy) take it: nbds://NAME@ADDR:PORT/NAME?tls-psk-file=PATH (or
// nbds+unix://NAME@/NAME?socket=PATH&tls-psk-file=PATH).
std::string nbd_uri(const NbdEndpoint& endpoint, const std::string& export_name, const std::string& tls_psk_file = {});

}  // namespace nbdxm::cli
