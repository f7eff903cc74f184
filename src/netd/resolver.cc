
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>

#include "common/strings.h"
#include "model/egress.h"
#include "netd/dns.h"
#include "netd/internal.h"
#include "netd/netd.h"

namespace upstream::netd {

// --- the resolver ----------------------------------------------------------------------------

void answer_query(int sock, std::string msg, sockaddr_in peer) {
  auto pol = policy_for(ntohl(peer.sin_addr.s_addr));
  if (!pol) return;
  auto q = dns::parse_query(msg);
  if (!q) return;
  std::string resp;
  bool allowed = egress::name_allowed(*pol, q->name);
  counters.update(*pol, [&](BoxStats& s) {
    s.dns_queries++;
    if (!allowed) s.dns_refused++;
  });
  if (!allowed) {
    counters.deny(*pol, q->name, "domain " + q->name + " is not allowed (DNS)");
    resp = dns::answer(msg, *q, dns::kNxDomain, {}, 0);
  } else if (q->qtype == dns::kTypeA) {
    dns::Result r = dns::resolve_a(resolvers(*pol), q->name);
    std::vector<uint32_t> ok;
    auto hosts = host_addrs();
    for (uint32_t a : r.addrs) {
      if (auto why = egress::address_blocked(*pol, a, hosts, true))
        counters.deny(*pol, q->name, q->name + " resolves to " + *why + " (DNS)");
      else
        ok.push_back(a);
    }
    resp = dns::answer(msg, *q, r.rcode, ok, std::min<uint32_t>(r.ttl, 300));
  } else if (q->qtype == dns::kTypeAAAA) {
    resp = dns::answer(msg, *q, dns::kNoError, {}, 0);  // boxes have no IPv6
  } else if (q->qtype == dns::kTypeANY || q->qtype == dns::kTypeSVCB ||
             q->qtype == dns::kTypeHTTPS) {
    // Records whose addresses (hints) netd does not look into: an empty answer, so clients ask
    // for A records, which it filters.
    resp = dns::answer(msg, *q, dns::kNoError, {}, 0);
  } else {
    resp = dns::forward(resolvers(*pol), msg);
    auto hosts = host_addrs();
    auto blocked = [&](uint32_t a) {
      return egress::address_blocked(*pol, a, hosts, true).has_value();
    };
    if (resp.empty()) {
      resp = dns::answer(msg, *q, dns::kServFail, {}, 0);
    } else if (dns::carries_blocked_address(resp, blocked)) {
      counters.deny(*pol, q->name,
                    "the answer for " + q->name + " (type " + std::to_string(q->qtype) +
                        ") carries an address boxes may not be given (DNS)");
      resp = dns::answer(msg, *q, dns::kNoError, {}, 0);
    }
  }
  ::sendto(sock, resp.data(), resp.size(), 0, reinterpret_cast<sockaddr*>(&peer), sizeof peer);
}

}  // namespace upstream::netd
