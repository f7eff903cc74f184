// The name a connection asks for, read from its first bytes (box-controlled input, netd runs as
// host root: fuzzed by tests/fuzz/peek_fuzz.cc). Pure functions of the bytes, nothing else here.
#include <strings.h>

#include <algorithm>
#include <cstdint>

#include "common/strings.h"
#include "netd/netd.h"

namespace upstream::netd {

std::string tls_sni(const std::string& h) {
  auto u8 = [&](size_t i) { return static_cast<uint8_t>(h[i]); };
  auto u16 = [&](size_t i) { return static_cast<size_t>((u8(i) << 8) | u8(i + 1)); };
  size_t p = 5;
  if (h.size() < p + 4 || u8(p) != 1) return "";
  p += 4 + 2 + 32;
  if (h.size() < p + 1) return "";
  p += 1 + u8(p);
  if (h.size() < p + 2) return "";
  p += 2 + u16(p);
  if (h.size() < p + 1) return "";
  p += 1 + u8(p);
  if (h.size() < p + 2) return "";
  size_t end = std::min(h.size(), p + 2 + u16(p));
  p += 2;
  while (p + 4 <= end) {
    size_t type = u16(p), len = u16(p + 2);
    p += 4;
    if (p + len > end) return "";
    if (type == 0 && len >= 5 && u8(p + 2) == 0) {
      size_t n = u16(p + 3);
      if (p + 5 + n <= end) return h.substr(p + 5, n);
      return "";
    }
    p += len;
  }
  return "";
}

std::string http_host(const std::string& head) {
  for (const auto& line : split(head.substr(0, head.find("\r\n\r\n")), '\n')) {
    std::string l = trim(line);
    if (l.size() > 5 && strncasecmp(l.c_str(), "host:", 5) == 0) {
      std::string host = trim(l.substr(5));
      // A control character (a bare CR, say) makes the head malformed, not part of a name.
      for (unsigned char c : host)
        if (c < 0x20 || c == 0x7f) return "";
      return host;
    }
  }
  return "";
}

}  // namespace upstream::netd
