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

}  // namespace

void attach_veth(pid_t pid, const egress::NetAddrs& a) {
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

void detach_veth(const egress::NetAddrs& a) {
  Sock s = route_socket();
  rtnl_link* l = nullptr;
  if (rtnl_link_get_kernel(s.get(), 0, a.host_if.c_str(), &l) < 0) return;
  Link owned(l);
  if (int e = rtnl_link_delete(s.get(), owned.get()); e < 0) nl_fail("remove " + a.host_if, e);
}

void enable_ipv4_forwarding() {
  UniqueFd f(::open("/proc/sys/net/ipv4/ip_forward", O_WRONLY | O_CLOEXEC));
  if (!f) throw_sys(Errc::unavailable, "open /proc/sys/net/ipv4/ip_forward");
  write_all(f.get(), std::string("1\n"));
}

}  // namespace upstream::runtime
