// The installation's egress CA: a key that never leaves the state directory, and certificates
// minted from it for the hosts whose HTTPS requests the host proxy intercepts to add headers.
#pragma once

#include <string>

namespace upstream::ca {

struct Files {
  std::string cert;  // PEM: what boxes trust
  std::string key;   // PEM: the CA key, 0600, outside every box
};

// Creates the CA under `dir` when it is not there yet (atomically: a crash leaves none or all of
// it) and returns its paths.
Files ensure(const std::string& dir);

struct Minted {
  std::string cert_pem;  // the leaf, then the CA
  std::string key_pem;
};
// A certificate for `host` (a DNS name or an IPv4 address), valid for a day back and a year on,
// signed by the CA. Throws on a bad CA.
Minted mint(const std::string& ca_cert_pem, const std::string& ca_key_pem, const std::string& host);

}  // namespace upstream::ca
