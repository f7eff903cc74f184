// A box's network: a veth pair between the host and the box's own network namespace, addresses
// from the box network pool, a default route through the host, and the host firewall that NATs
// box traffic to the uplink and keeps it away from private ranges, the host and other boxes.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "model/egress.h"

namespace upstream::runtime {

// Creates the veth pair and moves its box end into the network namespace of `pid` as eth0, with
// its address, link up and a default route through the host end. A veth of the same name left
// by a box that died is replaced. The pair goes away with the namespace.
void attach_veth(pid_t pid, const egress::NetAddrs& a);

// Removes a box's veth pair (from the host end), if it is there.
void detach_veth(const egress::NetAddrs& a);

// IPv4 forwarding on, for box traffic to reach the uplink.
void enable_ipv4_forwarding();

// Applies an nftables ruleset (see firewall/ruleset.h) as one transaction: all of it or nothing.
// In-process through libnftables when the host has it (src/runtime/nft.cc), else `nft -f -`;
// UPSTREAM_NFT=exec forces the latter.
void apply_nft(const std::string& ruleset);

// Whether apply_nft goes through libnftables in this process.
bool nft_in_process();

}  // namespace upstream::runtime
