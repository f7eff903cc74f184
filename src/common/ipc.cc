#include "common/ipc.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include "common/error.h"

namespace upstream::ipc {

void send(int sock, const nlohmann::json& body, const std::vector<int>& fds) {
  std::string text = body.dump();
  if (text.size() > kMaxMessage)
    throw Error("ipc message too large (" + std::to_string(text.size()) + " bytes)");
  if (fds.size() > kMaxFds) throw Error("too many descriptors in one ipc message");
  iovec iov{text.data(), text.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)];
  if (!fds.empty()) {
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  for (;;) {
    ssize_t n = ::sendmsg(sock, &msg, MSG_NOSIGNAL);
    if (n >= 0) return;
    if (errno == EINTR) continue;
    if (errno == EAGAIN) {
      pollfd p{sock, POLLOUT, 0};
      ::poll(&p, 1, 1000);
      continue;
    }
    if (errno == EPIPE || errno == ECONNRESET || errno == ENOTCONN)
      throw_sys(Errc::unavailable, "ipc send");
    throw_sys("ipc send");
  }
}

std::optional<Message> recv(int sock) {
  // Not zero-filled: only the pages the message lands on are touched (faulting in the whole
  // buffer costs a millisecond on some hosts).
  std::unique_ptr<char[]> buf(new char[kMaxMessage + 1]);
  iovec iov{buf.get(), kMaxMessage + 1};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)];
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n;
  do {
    n = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN) return std::nullopt;
    if (errno == ECONNRESET) {
      errno = 0;
      return std::nullopt;
    }
    throw_sys("ipc recv");
  }
  Message out;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; i++) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
        out.fds.emplace_back(fd);
      }
    }
  }
  if (n == 0 && out.fds.empty()) {
    errno = 0;
    return std::nullopt;
  }
  if (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) throw Error("ipc message truncated");
  out.body = nlohmann::json::parse(buf.get(), buf.get() + n, nullptr, false);
  if (out.body.is_discarded() || !out.body.is_object())
    throw Error("ipc message is not a JSON object");
  return out;
}

std::optional<Message> recv_wait(int sock, int timeout_ms) {
  pollfd p{sock, POLLIN, 0};
  for (;;) {
    int r = ::poll(&p, 1, timeout_ms);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) throw_sys("poll");
    if (r == 0) throw Error(Errc::timeout, "timed out waiting for the box");
    break;
  }
  return recv(sock);
}

UniqueFd connect(const std::string& path) {
  UniqueFd s(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (!s) throw_sys("socket");
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::string target = path;
  UniqueFd dir;
  if (target.size() >= sizeof addr.sun_path) {
    auto slash = path.rfind('/');
    dir.reset(::open(path.substr(0, slash).c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!dir) throw_sys(Errc::unavailable, "open " + path.substr(0, slash));
    target = "/proc/self/fd/" + std::to_string(dir.get()) + path.substr(slash);
  }
  std::memcpy(addr.sun_path, target.c_str(), target.size() + 1);
  if (::connect(s.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
    throw_sys(Errc::unavailable, "connect " + path);
  return s;
}

std::pair<UniqueFd, UniqueFd> socketpair() {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) throw_sys("socketpair");
  return {UniqueFd(sv[0]), UniqueFd(sv[1])};
}

}  // namespace upstream::ipc
