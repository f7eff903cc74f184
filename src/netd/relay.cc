
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>

#include "common/fd.h"
#include "netd/internal.h"
#include "netd/netd.h"

namespace upstream::netd {

// Relayed writes go out as they come (a response's head and body are separate writes; Nagle
// would hold the second for the peer's delayed ACK).
void no_delay(int fd) {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

UniqueFd connect_to(uint32_t ip, uint16_t port, int timeout_ms) {
  UniqueFd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!s) return s;
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  sa.sin_addr.s_addr = htonl(ip);
  if (::connect(s.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    if (errno != EINPROGRESS) return UniqueFd();
    pollfd p{s.get(), POLLOUT, 0};
    if (::poll(&p, 1, timeout_ms) <= 0) return UniqueFd();
    int err = 0;
    socklen_t len = sizeof err;
    ::getsockopt(s.get(), SOL_SOCKET, SO_ERROR, &err, &len);
    if (err) return UniqueFd();
  }
  set_nonblocking(s.get(), false);
  no_delay(s.get());
  return s;
}

// Copies both ways until both sides are done; counts bytes box -> world and back. The bytes move
// through a pipe per direction with splice(2): never copied through this process.
void relay(int box, int world, uint64_t& out, uint64_t& in) {
  Pipe pipes[2] = {make_pipe(O_CLOEXEC), make_pipe(O_CLOEXEC)};
  for (auto& p : pipes) ::fcntl(p.write.get(), F_SETPIPE_SZ, 1 << 20);
  bool open[2] = {true, true};
  while (open[0] || open[1]) {
    pollfd p[2] = {{open[0] ? box : -1, POLLIN, 0}, {open[1] ? world : -1, POLLIN, 0}};
    if (::poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    for (int i = 0; i < 2; i++) {
      if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      int from = i == 0 ? box : world, to = i == 0 ? world : box;
      ssize_t n = ::splice(from, nullptr, pipes[i].write.get(), nullptr, 1 << 20,
                           SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (n < 0 && errno == EAGAIN) continue;
      if (n <= 0) {
        ::shutdown(to, SHUT_WR);
        open[i] = false;
        if (n < 0) return;
        continue;
      }
      for (ssize_t left = n; left > 0;) {
        ssize_t m = ::splice(pipes[i].read.get(), nullptr, to, nullptr, static_cast<size_t>(left),
                             SPLICE_F_MOVE);
        if (m <= 0) return;
        left -= m;
      }
      (i == 0 ? out : in) += static_cast<uint64_t>(n);
    }
  }
}

}  // namespace upstream::netd
