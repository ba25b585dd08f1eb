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

// With a non-empty `tls_psk_file` the handshake requires TLS with that key, the export's name as the identity.
HandshakeResult nbd_handshake(const std::string& address, int port, const std::string& export_name,
                              const std::string& tls_psk_file = {});
// nbd://ADDR:PORT/NAME (an IPv6 address in brackets); with a key file, the URI of a TLS export as libnbd programs
// (nbdinfo, nbdcopy) take it: nbds://NAME@ADDR:PORT/NAME?tls-psk-file=PATH.
std::string nbd_uri(const std::string& address, int port, const std::string& export_name,
                    const std::string& tls_psk_file = {});

}  // namespace nbdxm::cli
