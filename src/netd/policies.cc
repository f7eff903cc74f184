
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <mutex>

#include "common/fd.h"
#include "common/proc.h"
#include "common/time.h"
#include "model/egress.h"
#include "netd/dns.h"
#include "netd/internal.h"
#include "netd/netd.h"

namespace upstream::netd {

// --- policies --------------------------------------------------------------------------------

std::optional<egress::BoxPolicy> policy_for(uint32_t src) {
  egress::Cidr pool = egress::cidr(egress::kBoxNetPool);
  if (!pool.contains(src)) return std::nullopt;
  uint32_t slot = (src - pool.net) / 4;
  auto text = try_read_file(policy_path(slot));
  if (!text) return std::nullopt;
  try {
    egress::BoxPolicy p = egress::policy_from_json(json::parse(*text));
    if (p.box_ip != egress::ipv4_string(src) || !process_matches(p.init_pid, p.init_start))
      return std::nullopt;  // the file of a box that is gone
    return p;
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

std::vector<uint32_t> host_addrs() {
  static std::mutex mu;
  static std::vector<uint32_t> cached;
  static int64_t at = 0;
  std::lock_guard g(mu);
  if (mono_us() - at < 2'000'000) return cached;
  cached.clear();
  ifaddrs* ifs = nullptr;
  if (::getifaddrs(&ifs) == 0) {
    for (ifaddrs* i = ifs; i; i = i->ifa_next)
      if (i->ifa_addr && i->ifa_addr->sa_family == AF_INET)
        cached.push_back(ntohl(reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr.s_addr));
    ::freeifaddrs(ifs);
  }
  at = mono_us();
  return cached;
}

std::vector<std::string> resolvers(const egress::BoxPolicy& p) {
  return p.resolvers.empty() ? dns::resolv_conf_servers() : p.resolvers;
}

}  // namespace upstream::netd
