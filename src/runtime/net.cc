#include "runtime/net.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <thread>

#include <netlink/netlink.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>
#include <netlink/route/link/veth.h>
#include <netlink/route/route.h>

#include "common/error.h"
#include "common/fd.h"
#include "common/proc.h"
#include "common/strings.h"
#include "netd/egress.h"

namespace upstream::runtime {

namespace {

struct SockDel {
  void operator()(nl_sock* s) const { nl_socket_free(s); }
};
struct LinkDel {
  void operator()(rtnl_link* l) const { rtnl_link_put(l); }
};
struct AddrDel {
  void operator()(nl_addr* a) const { nl_addr_put(a); }
};
struct RtAddrDel {
  void operator()(rtnl_addr* a) const { rtnl_addr_put(a); }
};
struct RouteDel {
  void operator()(rtnl_route* r) const { rtnl_route_put(r); }
};
using Sock = std::unique_ptr<nl_sock, SockDel>;
using Link = std::unique_ptr<rtnl_link, LinkDel>;

[[noreturn]] void nl_fail(const std::string& what, int err) {
  throw Error(Errc::unavailable, what + ": " + nl_geterror(err));
}

Sock route_socket() {
  Sock s(nl_socket_alloc());
  if (!s) throw Error(Errc::unavailable, "netlink: out of memory");
  if (int e = nl_connect(s.get(), NETLINK_ROUTE); e < 0) nl_fail("netlink connect", e);
  return s;
}

int ifindex(nl_sock* s, const std::string& name) {
  rtnl_link* l = nullptr;
  if (int e = rtnl_link_get_kernel(s, 0, name.c_str(), &l); e < 0)
    nl_fail("find interface " + name, e);
  Link link(l);
  return rtnl_link_get_ifindex(l);
}

void set_up(nl_sock* s, const std::string& name) {
  rtnl_link* l = nullptr;
  if (int e = rtnl_link_get_kernel(s, 0, name.c_str(), &l); e < 0)
    nl_fail("find interface " + name, e);
  Link link(l);
  Link change(rtnl_link_alloc());
  rtnl_link_set_flags(change.get(), IFF_UP);
  if (int e = rtnl_link_change(s, link.get(), change.get(), 0); e < 0)
    nl_fail("bring up " + name, e);
}

void add_address(nl_sock* s, int index, const std::string& cidr) {
  nl_addr* a = nullptr;
  if (int e = nl_addr_parse(cidr.c_str(), AF_INET, &a); e < 0) nl_fail("address " + cidr, e);
  std::unique_ptr<nl_addr, AddrDel> local(a);
  std::unique_ptr<rtnl_addr, RtAddrDel> addr(rtnl_addr_alloc());
  rtnl_addr_set_ifindex(addr.get(), index);
  rtnl_addr_set_local(addr.get(), local.get());
  if (int e = rtnl_addr_add(s, addr.get(), 0); e < 0) nl_fail("add address " + cidr, e);
}

void add_default_route(nl_sock* s, int index, const std::string& gateway) {
  nl_addr *gw = nullptr, *dst = nullptr;
  if (int e = nl_addr_parse(gateway.c_str(), AF_INET, &gw); e < 0) nl_fail("gateway", e);
  std::unique_ptr<nl_addr, AddrDel> gw_owned(gw);
  if (int e = nl_addr_parse("0.0.0.0/0", AF_INET, &dst); e < 0) nl_fail("route", e);
  std::unique_ptr<nl_addr, AddrDel> dst_owned(dst);
  std::unique_ptr<rtnl_route, RouteDel> r(rtnl_route_alloc());
  rtnl_route_set_family(r.get(), AF_INET);
  rtnl_route_set_dst(r.get(), dst);
  rtnl_nexthop* nh = rtnl_route_nh_alloc();
  rtnl_route_nh_set_ifindex(nh, index);
  rtnl_route_nh_set_gateway(nh, gw);
  rtnl_route_add_nexthop(r.get(), nh);  // owned by the route from here
  if (int e = rtnl_route_add(s, r.get(), NLM_F_CREATE); e < 0) nl_fail("add default route", e);
}

// The first address of kBoxNetPool.
uint32_t pool_base() { return egress::cidr(kBoxNetPool).net; }

std::string ip_string(uint32_t host_order) { return egress::ipv4_string(host_order); }

}  // namespace

NetAddrs net_addrs(uint32_t slot) {
  if (slot >= kMaxNetSlots)
    throw Error(Errc::unavailable, "no network address left: the box network pool " +
                                       std::string(kBoxNetPool) + " holds " +
                                       std::to_string(kMaxNetSlots) + " boxes with a network");
  NetAddrs a;
  a.host_if = "upv" + std::to_string(slot);
  uint32_t net = pool_base() + slot * 4;
  a.host_ip = ip_string(net + 1);
  a.box_ip = ip_string(net + 2);
  return a;
}

void attach_veth(pid_t pid, const NetAddrs& a) {
  UniqueFd ns(::open(("/proc/" + std::to_string(pid) + "/ns/net").c_str(), O_RDONLY | O_CLOEXEC));
  if (!ns) throw_sys(Errc::unavailable, "open the box's network namespace");
  // A pair of this name is only left behind if its box's namespace is still being torn down.
  detach_veth(a);
  Sock s = route_socket();
  Link veth(rtnl_link_veth_alloc());
  if (!veth) throw Error(Errc::unavailable, "netlink: out of memory");
  rtnl_link_set_name(veth.get(), a.host_if.c_str());
  rtnl_link* peer = rtnl_link_veth_get_peer(veth.get());
  rtnl_link_set_name(peer, "eth0");
  rtnl_link_set_ns_fd(peer, ns.get());
  rtnl_link_put(peer);
  if (int e = rtnl_link_add(s.get(), veth.get(), NLM_F_CREATE | NLM_F_EXCL); e < 0)
    nl_fail("create veth " + a.host_if, e);
  try {
    add_address(s.get(), ifindex(s.get(), a.host_if), a.host_ip + "/" + std::to_string(a.prefix));
    set_up(s.get(), a.host_if);
    // The box end, from a thread inside the box's network namespace (a netlink socket belongs
    // to the namespace it was opened in).
    std::string err;
    std::thread t([&] {
      try {
        if (::setns(ns.get(), CLONE_NEWNET) != 0) throw_sys("enter the box's network namespace");
        Sock in = route_socket();
        int index = ifindex(in.get(), "eth0");
        add_address(in.get(), index, a.box_ip + "/" + std::to_string(a.prefix));
        set_up(in.get(), "eth0");
        add_default_route(in.get(), index, a.host_ip);
      } catch (const std::exception& e) {
        err = e.what();
      }
    });
    t.join();
    if (!err.empty()) throw Error(Errc::unavailable, "box network: " + err);
  } catch (...) {
    try {
      detach_veth(a);
    } catch (const Error&) {
    }
    throw;
  }
}

void detach_veth(const NetAddrs& a) {
  Sock s = route_socket();
  rtnl_link* l = nullptr;
  if (rtnl_link_get_kernel(s.get(), 0, a.host_if.c_str(), &l) < 0) return;
  Link owned(l);
  if (int e = rtnl_link_delete(s.get(), owned.get()); e < 0) nl_fail("remove " + a.host_if, e);
}

std::string parse_cidr(const std::string& text, const std::string& what) {
  std::string addr = text;
  int prefix = 32;
  if (auto slash = text.find('/'); slash != std::string::npos) {
    addr = text.substr(0, slash);
    std::string p = text.substr(slash + 1);
    if (p.empty() || p.size() > 2 || p.find_first_not_of("0123456789") != std::string::npos ||
        std::stoi(p) > 32)
      throw_invalid("invalid " + what + " '" + text + "': the prefix must be 0 to 32");
    prefix = std::stoi(p);
  }
  in_addr a{};
  if (::inet_pton(AF_INET, addr.c_str(), &a) != 1)
    throw_invalid("invalid " + what + " '" + text +
                  "': not an IPv4 address or CIDR such as 10.1.0.0/16");
  uint32_t host = ntohl(a.s_addr);
  uint32_t mask = prefix == 0 ? 0 : ~uint32_t{0} << (32 - prefix);
  return ip_string(host & mask) + "/" + std::to_string(prefix);
}

namespace {

std::string remove_rules(uint32_t slot) {
  std::string chain = "s" + std::to_string(slot), ip = net_addrs(slot).box_ip;
  // Added first, so that the deletions never fail on what is not there.
  return "add chain inet upstream " + chain + "\n" +                                 //
         "add element inet upstream egress { " + ip + " : jump " + chain + " }\n" +  //
         "add element inet upstream proxied { " + ip + " }\n" +                      //
         "delete element inet upstream egress { " + ip + " }\n" +                    //
         "delete element inet upstream proxied { " + ip + " }\n" +                   //
         "flush chain inet upstream " + chain + "\n" +                               //
         "delete chain inet upstream " + chain + "\n";
}

bool table_exists() {
  try {
    run_tool({"nft", "list", "table", "inet", "upstream"});
    return true;
  } catch (const Error&) {
    return false;
  }
}

}  // namespace

bool install_firewall(const std::vector<std::string>& open_cidrs, uint16_t proxy_port,
                      uint16_t dns_port) {
  const std::vector<std::string>& open = open_cidrs;
  std::string sig = "upstream proxy=" + std::to_string(proxy_port) +
                    " dns=" + std::to_string(dns_port) + " open=" + join(open, ",");
  // What was installed last is recorded next to netd's files: a process that finds the same
  // needs no `nft` run (each costs ~20 ms here); a different one (netd restarted, other open
  // ranges) rebuilds the table.
  const std::string sig_file = "/run/upstream/net/firewall.sig";
  if (try_read_file(sig_file) == sig) return false;
  // IPv4 forwarding, for box traffic to reach the uplink.
  {
    UniqueFd f(::open("/proc/sys/net/ipv4/ip_forward", O_WRONLY | O_CLOEXEC));
    if (!f) throw_sys(Errc::unavailable, "open /proc/sys/net/ipv4/ip_forward");
    write_all(f.get(), std::string("1\n"));
  }
  std::string proxy = std::to_string(proxy_port), dns = std::to_string(dns_port);
  // One table, replaced atomically: created (if absent) and deleted, then built, in one
  // transaction of `nft -f`.
  std::string rules = R"(table inet upstream
delete table inet upstream
table inet upstream {
  comment ")" + sig + R"("
  set private4 {
    type ipv4_addr; flags interval;
    elements = { )" + join(egress::private_ranges(), ", ") +
                      R"( }
  }
  set proxied {
    type ipv4_addr;
  }
  map egress {
    type ipv4_addr : verdict;
  }
)";
  if (!open.empty())
    rules += "  set open4 {\n    type ipv4_addr; flags interval;\n    elements = { " +
             join(open, ", ") + " }\n  }\n";
  rules +=
      R"(  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    iifname "upv*" udp dport 53 redirect to :)" +
      dns + R"(
    iifname "upv*" ip saddr @proxied tcp dport { 80, 443 } redirect to :)" +
      proxy + R"(
  }
  chain input {
    type filter hook input priority filter - 10; policy accept;
    iifname "upv*" ct state established,related accept
    iifname "upv*" ct status dnat udp dport )" +
      dns + R"( accept
    iifname "upv*" ct status dnat tcp dport )" +
      proxy + R"( accept
    iifname "upv*" counter drop
    tcp dport )" +
      proxy +
      R"( drop
    udp dport )" +
      dns + R"( drop
  }
  chain forward {
    type filter hook forward priority filter - 10; policy accept;
    iifname "upv*" meta nfproto ipv6 counter drop
    iifname "upv*" ip daddr )" +
      kBoxNetPool + R"( counter drop
)" +
      (open.empty() ? "    iifname \"upv*\" ip daddr @private4 counter drop\n"
                    : "    iifname \"upv*\" ip daddr @private4 ip daddr != @open4 counter drop\n") +
      R"(    iifname "upv*" ip saddr vmap @egress
    iifname "upv*" accept
    oifname "upv*" ct state established,related accept
    oifname "upv*" counter drop
  }
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr )" +
      kBoxNetPool + R"( oifname != "upv*" masquerade
  }
}
)";
  run_tool({"nft", "-f", "-"}, rules);
  write_file_atomic(sig_file, sig, 0600);
  return true;
}

void set_box_rules(uint32_t slot, bool proxied, bool custom, const std::vector<std::string>& allow,
                   const std::vector<std::string>& deny) {
  std::string chain = "s" + std::to_string(slot), ip = net_addrs(slot).box_ip;
  std::string rules = remove_rules(slot);
  if (custom) {
    rules += "add chain inet upstream " + chain + "\n";
    if (!deny.empty())
      rules += "add rule inet upstream " + chain + " ip daddr { " + join(deny, ", ") +
               " } counter drop\n";
    if (!allow.empty())
      rules +=
          "add rule inet upstream " + chain + " ip daddr { " + join(allow, ", ") + " } accept\n";
    rules += "add rule inet upstream " + chain + " counter drop\n";
    rules += "add element inet upstream egress { " + ip + " : jump " + chain + " }\n";
  }
  if (proxied) rules += "add element inet upstream proxied { " + ip + " }\n";
  run_tool({"nft", "-f", "-"}, rules);
}

void clear_box_rules(uint32_t slot) {
  try {
    run_tool({"nft", "-f", "-"}, remove_rules(slot));
  } catch (const Error&) {
    if (table_exists()) throw;  // else there is nothing to remove
  }
}

}  // namespace upstream::runtime
