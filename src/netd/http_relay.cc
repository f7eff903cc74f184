#include "netd/http_relay.h"

#include "model/egress.h"

namespace upstream::netd {

std::string target_host(const http::request_header<>& h) {
  std::string t(h.target());
  std::string lower = t.substr(0, 8);
  for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  size_t start = lower.rfind("http://", 0) == 0 ? 7 : lower.rfind("https://", 0) == 0 ? 8 : 0;
  if (!start) return "";
  std::string authority = t.substr(start, t.find_first_of("/?#", start) - start);
  if (auto at = authority.rfind('@'); at != std::string::npos) authority = authority.substr(at + 1);
  return egress::normalise_host(authority);
}

std::string request_host(const http::request_header<>& h) {
  std::string t = target_host(h);
  if (!t.empty()) return t;
  return egress::normalise_host(std::string(h[http::field::host]));
}

}  // namespace upstream::netd
