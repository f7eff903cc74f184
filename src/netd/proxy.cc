
#include <arpa/inet.h>
#include <linux/netfilter_ipv4.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>

#include "common/fd.h"
#include "common/log.h"
#include "common/strings.h"
#include "common/time.h"
#include "model/egress.h"
#include "netd/ca.h"
#include "netd/dns.h"
#include "netd/internal.h"
#include "netd/netd.h"

namespace upstream::netd {

// --- the proxy -------------------------------------------------------------------------------

void handle(UniqueFd box) {
  sockaddr_in peer{}, orig{};
  socklen_t len = sizeof peer;
  if (::getpeername(box.get(), reinterpret_cast<sockaddr*>(&peer), &len) != 0) return;
  len = sizeof orig;
  if (::getsockopt(box.get(), SOL_IP, SO_ORIGINAL_DST, &orig, &len) != 0) return;
  auto pol = policy_for(ntohl(peer.sin_addr.s_addr));
  if (!pol) return;
  uint32_t orig_ip = ntohl(orig.sin_addr.s_addr);
  uint16_t port = ntohs(orig.sin_port);
  std::string head = peek_head(box.get(), 3000);
  bool tls = !head.empty() && head[0] == 0x16;
  bool is_http = !tls && !head.empty() && head.find("\r\n\r\n") != std::string::npos;
  std::string name = egress::normalise_host(tls ? tls_sni(head) : is_http ? http_host(head) : "");
  if (egress::parse_ipv4(name)) name.clear();
  std::string dest =
      (name.empty() ? egress::ipv4_string(orig_ip) : name) + ":" + std::to_string(port);
  std::optional<uint32_t> target;
  std::string reason;
  auto hosts = host_addrs();
  if (!name.empty() && egress::name_allowed(*pol, name)) {
    dns::Result r = dns::resolve_a(resolvers(*pol), name);
    for (uint32_t a : r.addrs) {
      if (auto why = egress::address_blocked(*pol, a, hosts, true)) {
        if (reason.empty()) reason = name + " resolves to " + *why;
      } else {
        target = a;
        break;
      }
    }
    if (r.addrs.empty()) reason = name + " does not resolve on the host";
  } else if (auto why = egress::address_blocked(*pol, orig_ip, hosts, false)) {
    reason = name.empty() ? *why : "domain " + name + " is not allowed";
  } else {
    target = orig_ip;
  }
  if (!target) {
    counters.deny(*pol, dest, reason);
    if (is_http) {
      std::string body = "upstream egress policy: " + reason + "\n";
      std::string resp = "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: " +
                         std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
      // The request is still unread: read it so the close does not reset the reply.
      char sink[16389];
      (void)::recv(box.get(), sink, std::min(head.size(), sizeof sink), 0);
      try {
        write_all(box.get(), resp);
      } catch (const std::exception& e) {
        log(LogLevel::debug, std::string("the box went before its refusal was sent: ") + e.what());
      }
      ::shutdown(box.get(), SHUT_WR);
    }
    return;
  }
  UniqueFd world = connect_to(*target, port, 10000);
  if (!world) {
    counters.deny(*pol, dest, "could not connect to " + egress::ipv4_string(*target));
    return;
  }
  counters.update(*pol, [&](BoxStats& s) {
    Dest& d = s.dests[dest];
    d.connections++;
    if (is_http) d.requests++;
    d.last_at = now_ms();
  });
  if (tls && !name.empty() && !pol->ca_cert.empty()) {
    if (auto hs = egress::headers_for(*pol, name); !hs.empty()) {
      intercept(std::move(box), std::move(world), *pol, name, dest, hs);
      return;
    }
  }
  if (is_http) {
    relay_plain_http(std::move(box), std::move(world), *pol,
                     egress::normalise_host(http_host(head)), dest);
    return;
  }
  uint64_t out = 0, in = 0;
  relay(box.get(), world.get(), out, in);
  counters.update(*pol, [&](BoxStats& s) {
    Dest& d = s.dests[dest];
    d.bytes_out += out;
    d.bytes_in += in;
  });
}

}  // namespace upstream::netd
