#include "netd/http_relay.h"

#include "model/egress.h"

namespace upstream::netd {

namespace {

// The authority of an absolute-form target ("http://user@host:port/..."), nullopt for any other.
std::optional<std::string> target_authority(const http::request_header<>& h) {
  std::string t(h.target());
  std::string lower = t.substr(0, 8);
  for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  size_t start = lower.rfind("http://", 0) == 0 ? 7 : lower.rfind("https://", 0) == 0 ? 8 : 0;
  if (!start) return std::nullopt;
  std::string authority = t.substr(start, t.find_first_of("/?#", start) - start);
  if (auto at = authority.rfind('@'); at != std::string::npos) authority = authority.substr(at + 1);
  return authority;
}

}  // namespace

std::string target_host(const http::request_header<>& h) {
  auto authority = target_authority(h);
  return authority ? egress::normalise_host(*authority) : "";
}

std::string request_host(const http::request_header<>& h) {
  // An absolute target names the host, whatever the Host header says; one that names no valid
  // host makes the request one for no host (refused), never one for the Host header's.
  if (target_authority(h)) return target_host(h);
  return egress::normalise_host(std::string(h[http::field::host]));
}

}  // namespace upstream::netd
