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

// IPv4 forwarding on, for box traffic to reach the uplink.
void enable_ipv4_forwarding();

// Applies an nftables ruleset (see firewall/ruleset.h) as one transaction: all of it or nothing.
void apply_nft(const std::string& ruleset);

// Parses an IPv4 CIDR ("10.1.0.0/16", or an address as /32); throws invalid_argument naming
// `what`. Returns it normalised.
std::string parse_cidr(const std::string& text, const std::string& what);

}  // namespace upstream::runtime
