
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <chrono>
#include <thread>

#include "common/time.h"
#include "netd/internal.h"
#include "netd/netd.h"

namespace upstream::netd {

// --- the first bytes of a connection ---------------------------------------------------------

// Peeks (without consuming) until a whole TLS record or HTTP request head is there, the peer
// stops sending for `quiet_ms`, or 16 KiB.
std::string peek_head(int fd, int quiet_ms) {
  char buf[16389];
  std::string head;
  int64_t deadline = mono_us() + int64_t{quiet_ms} * 1000;
  size_t last = 0;
  while (true) {
    int left = static_cast<int>((deadline - mono_us()) / 1000);
    if (left <= 0) return head;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, left) <= 0) return head;
    ssize_t n = ::recv(fd, buf, sizeof buf, MSG_PEEK);
    if (n <= 0) return head;
    head.assign(buf, static_cast<size_t>(n));
    if (head[0] == 0x16) {
      if (head.size() >= 5) {
        size_t need = 5 + ((static_cast<uint8_t>(head[3]) << 8) | static_cast<uint8_t>(head[4]));
        if (head.size() >= std::min(need, sizeof buf)) return head;
      }
    } else if (!std::isalpha(static_cast<unsigned char>(head[0])) ||
               head.find("\r\n\r\n") != std::string::npos || head.size() >= sizeof buf) {
      return head;
    }
    if (head.size() == last)
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    else
      deadline = mono_us() + int64_t{quiet_ms} * 1000;
    last = head.size();
  }
}

}  // namespace upstream::netd
