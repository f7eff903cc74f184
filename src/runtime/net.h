// A box's network: a veth pair between the host and the box's own network namespace, addresses
// from the box network pool, a default route through the host, and the host firewall that NATs
// box traffic to the uplink and keeps it away from private ranges, the host and other boxes.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace upstream::runtime {

// Box networks: 10.200.0.0/14, a /30 per uid slot (host end .1, box end .2 of its /30): room
// for every uid slot (see slots.h).
constexpr const char* kBoxNetPool = "10.200.0.0/14";
constexpr uint32_t kMaxNetSlots = 65536;

struct NetAddrs {
  std::string host_if;  // host end of the veth pair: "upv<slot>"
  std::string host_ip;  // gateway of the box
  std::string box_ip;
  int prefix = 30;
};

// Throws unavailable when the slot is past what the pool holds.
NetAddrs net_addrs(uint32_t slot);

// Creates the veth pair and moves its box end into the network namespace of `pid` as eth0, with
// its address, link up and a default route through the host end. A veth of the same name left
// by a box that died is replaced. The pair goes away with the namespace.
void attach_veth(pid_t pid, const NetAddrs& a);

// Removes a box's veth pair (from the host end), if it is there.
void detach_veth(const NetAddrs& a);

// Installs (or replaces) the host side: IPv4 forwarding, and the `inet upstream` nftables table:
// box traffic may leave through the uplink (masqueraded), but never to private, shared, link-
// local, loopback or multicast ranges (except those the operator opened), never to the host
// itself, and nothing may enter a box that it did not start. Idempotent. `open_cidrs` come
// normalised by parse_cidr (the configuration checks them when it is read).
// With `proxy_port` and `dns_port` (netd's): every box's DNS goes to netd, and TCP 80/443 of the
// boxes in set `proxied` to its proxy; boxes in map `egress` jump to their own chain of CIDR
// rules. The table is only rebuilt when it differs from what these arguments describe (its
// comment says), so the per-box rules of other processes stay; returns true if it was rebuilt.
bool install_firewall(const std::vector<std::string>& open_cidrs, uint16_t proxy_port,
                      uint16_t dns_port);

// A box's own rules: `proxied` sends its TCP 80/443 to netd; `custom` gives it a chain that
// drops `deny`, accepts `allow` and drops the rest (after the private ranges were dropped).
// Replaces what the slot had. clear_box_rules removes them (no error if there are none).
void set_box_rules(uint32_t slot, bool proxied, bool custom, const std::vector<std::string>& allow,
                   const std::vector<std::string>& deny);
void clear_box_rules(uint32_t slot);

// Parses an IPv4 CIDR ("10.1.0.0/16", or an address as /32); throws invalid_argument naming
// `what`. Returns it normalised.
std::string parse_cidr(const std::string& text, const std::string& what);

}  // namespace upstream::runtime
