
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>

#include "common/digest.h"
#include "common/fd.h"
#include "common/log.h"
#include "common/proc.h"
#include "common/strings.h"
#include "model/egress.h"
#include "netd/http_relay.h"
#include "netd/internal.h"
#include "netd/netd.h"

namespace upstream::netd {

// --- exposed ports ---------------------------------------------------------------------------

struct ExposeTarget {
  egress::Exposure e;
  pid_t init_pid = 0;
  uint64_t init_start = 0;
};
std::mutex expose_mu;
std::map<uint16_t, ExposeTarget> expose_targets;  // by host port

bool credentials_ok(const egress::Exposure& e, const std::string& authorization) {
  std::string scheme = e.auth == "bearer" ? "bearer " : "basic ";
  if (authorization.size() <= scheme.size() ||
      strncasecmp(authorization.c_str(), scheme.c_str(), scheme.size()) != 0)
    return false;
  std::string cred = trim(authorization.substr(scheme.size()));
  if (e.auth == "basic") {
    auto decoded = base64_decode(cred);
    if (!decoded) return false;
    cred = *decoded;
  }
  std::string got = sha256_hex(cred);
  // Compared in constant time, as API keys are (the hash of a guess says nothing, but keep it so).
  return got.size() == e.hash.size() && CRYPTO_memcmp(got.data(), e.hash.data(), got.size()) == 0;
}

// A connection to `port` on the loopback of the box's network namespace (so servers bound to
// 127.0.0.1 inside the box are reachable too).
UniqueFd connect_in_box(const ExposeTarget& t) {
  UniqueFd out;
  if (!process_matches(t.init_pid, t.init_start)) return out;
  UniqueFd ns(
      ::open(("/proc/" + std::to_string(t.init_pid) + "/ns/net").c_str(), O_RDONLY | O_CLOEXEC));
  if (!ns) return out;
  std::thread th([&] {
    if (::setns(ns.get(), CLONE_NEWNET) != 0) return;
    out = connect_to(0x7f000001, t.e.port, 5000);
  });
  th.join();
  return out;
}

// Every request is authenticated, and its credentials removed, before it reaches the box (a
// client's second request on a kept-alive connection too); nothing reaches the box, not even a
// connection, before a request has shown them. A WebSocket upgrade is relayed for as long as it
// lasts.
void serve_exposed(UniqueFd c, ExposeTarget t) {
  asio::io_context ioc;
  tcp::socket client(ioc), box(ioc);
  client.assign(tcp::v4(), c.release());
  relay_http(
      client, box,
      [&](http::request_header<>& h) -> std::optional<Refusal> {
        if (!credentials_ok(t.e, std::string(h[http::field::authorization])))
          return Refusal{http::status::unauthorized,
                         "upstream: this port needs its credentials",
                         {{"WWW-Authenticate", t.e.auth == "bearer" ? "Bearer realm=\"upstream\""
                                                                    : "Basic realm=\"upstream\""}}};
        h.erase(http::field::authorization);
        if (!box.is_open()) {
          UniqueFd in = connect_in_box(t);
          if (!in)
            return Refusal{http::status::bad_gateway,
                           "upstream: nothing accepts connections on port " +
                               std::to_string(t.e.port) + " in the box"};
          box.assign(tcp::v4(), in.release());
        }
        return std::nullopt;
      },
      [&](beast::flat_buffer& from_client, beast::flat_buffer& from_box) {
        uint64_t a = 0, b = 0;
        relay_upgraded(client.native_handle(), box.native_handle(), from_client, from_box, a, b);
      });
}

void accept_exposed(int fd, uint16_t port) {
  while (true) {
    int c = ::accept4(fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      ::close(fd);  // shut down: the exposure went away
      return;
    }
    std::optional<ExposeTarget> t;
    {
      std::lock_guard g(expose_mu);
      if (auto it = expose_targets.find(port); it != expose_targets.end()) t = it->second;
    }
    if (!t) {
      ::close(c);
      continue;
    }
    no_delay(c);
    active++;
    std::thread([c, t = *t] {
      try {
        serve_exposed(UniqueFd(c), t);
      } catch (const std::exception& e) {
        log(LogLevel::warning, "exposure " + t.e.id + ": " + e.what());
      }
      active--;
    }).detach();
  }
}

// Keeps a listener for every exposure of a live box in the policy files, and none other.
void manage_exposures() {
  std::map<uint16_t, std::pair<int, std::string>> open;  // host port -> (fd, address)
  while (true) {
    if (retired) {
      for (const auto& [port, l] : open) ::shutdown(l.first, SHUT_RDWR);
      return;
    }
    std::map<uint16_t, ExposeTarget> want;
    for (uint32_t slot : policy_slots()) {
      try {
        auto p = egress::policy_from_json(json::parse(read_file(policy_path(slot))));
        if (!process_matches(p.init_pid, p.init_start)) continue;
        for (const auto& e : p.exposures) want[e.host_port] = {e, p.init_pid, p.init_start};
      } catch (const std::exception& e) {
        log(LogLevel::debug, "policy of slot " + std::to_string(slot) + " unreadable (" + e.what() +
                                 "); its exposures wait for the next scan");
      }
    }
    {
      std::lock_guard g(expose_mu);
      expose_targets = want;
    }
    for (auto it = open.begin(); it != open.end();) {
      auto w = want.find(it->first);
      if (w == want.end() || w->second.e.address != it->second.second) {
        ::shutdown(it->second.first, SHUT_RDWR);  // its accept loop closes it
        it = open.erase(it);
      } else {
        ++it;
      }
    }
    for (const auto& [port, t] : want) {
      if (open.count(port)) continue;
      int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      int one = 1;
      ::setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
      ::setsockopt(s, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);  // a successor binds it too
      sockaddr_in sa{};
      sa.sin_family = AF_INET;
      sa.sin_port = htons(port);
      ::inet_pton(AF_INET, t.e.address.c_str(), &sa.sin_addr);
      if (::bind(s, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 || ::listen(s, 256) != 0) {
        log_errno(LogLevel::error,
                  "cannot listen on " + t.e.address + ":" + std::to_string(port) +
                      " for exposure " + t.e.id,
                  errno);
        ::close(s);
        continue;
      }
      open[port] = {s, t.e.address};
      std::thread(accept_exposed, s, port).detach();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

}  // namespace upstream::netd
