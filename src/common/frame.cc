#include "common/frame.h"

#include <unistd.h>

#include <cerrno>
#include <cstdint>

#include "common/error.h"
#include "common/fd.h"

namespace upstream::frame {

void write_header(int fd, const nlohmann::json& header) {
  std::string text = header.dump();
  uint32_t len = static_cast<uint32_t>(text.size());
  std::string out;
  out.reserve(4 + text.size());
  for (int i = 0; i < 4; i++) out.push_back(static_cast<char>((len >> (8 * i)) & 0xff));
  out += text;
  write_all(fd, out);
}

static size_t read_some(int fd, char* buf, size_t len) {
  size_t got = 0;
  while (got < len) {
    ssize_t n = ::read(fd, buf + got, len - got);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_sys("read");
    }
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  return got;
}

void read_exact(int fd, void* buf, size_t len) {
  if (read_some(fd, static_cast<char*>(buf), len) != len)
    throw Error(Errc::unavailable, "stream ended early");
}

std::optional<nlohmann::json> read_header(int fd) {
  unsigned char lenbuf[4];
  size_t got = read_some(fd, reinterpret_cast<char*>(lenbuf), 4);
  if (got == 0) return std::nullopt;
  if (got != 4) throw Error(Errc::unavailable, "stream ended inside a frame");
  uint32_t len = static_cast<uint32_t>(lenbuf[0]) | (static_cast<uint32_t>(lenbuf[1]) << 8) |
                 (static_cast<uint32_t>(lenbuf[2]) << 16) |
                 (static_cast<uint32_t>(lenbuf[3]) << 24);
  if (len > kMaxHeader) throw Error("frame header too large");
  std::string text(len, '\0');
  read_exact(fd, text.data(), len);
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) throw Error("malformed frame header");
  return j;
}

}  // namespace upstream::frame
