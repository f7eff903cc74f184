
#include <arpa/inet.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <linux/close_range.h>
#include <linux/netfilter_ipv4.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <algorithm>
#include <atomic>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <mutex>
#include <thread>

#include "common/digest.h"
#include "common/error.h"
#include "common/fd.h"
#include "common/fs.h"
#include "common/ipc.h"
#include "common/proc.h"
#include "common/strings.h"
#include "common/time.h"
#include "model/egress.h"
#include "netd/ca.h"
#include "netd/dns.h"
#include "netd/http_relay.h"
#include "netd/internal.h"
#include "netd/netd.h"
#include "runtime/net.h"

namespace upstream::netd {

using nlohmann::json;
namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using tcp = boost::asio::ip::tcp;

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
