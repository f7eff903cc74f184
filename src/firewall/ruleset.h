// The host firewall as text: a pure function from what the boxes' networks need to the nftables
// ruleset that gives it (applied with `nft -f`, one transaction each). Nothing here touches the
// kernel, so every ruleset is golden-tested and checked by `nft -c` in the unit tests.
//
// One table, `inet upstream`, shared by every installation on the host. Its global part depends
// only on netd (one per host) and the box network pool, so installations with different
// configurations agree on it; what differs per box (its egress policy, the private ranges its
// installation opened) lives in the box's own chain `s<slot>`, entered from map `egress` by the
// box's address. A box's packets are accepted only from its own interface with its own address.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace upstream::firewall {

struct TableSpec {
  uint16_t proxy_port = 0;                  // netd's egress proxy
  uint16_t dns_port = 0;                    // netd's resolver
  std::string box_pool;                     // the box network pool ("10.200.0.0/14")
  std::vector<std::string> private_ranges;  // closed to boxes unless opened for one
};

// A box's own rules. A box needs them (has_rules) when it is proxied, custom, or has ranges
// opened; others are handled by the table's global rules alone.
struct SlotRules {
  uint32_t slot = 0;
  std::string box_ip;
  bool proxied = false;            // TCP 80 and 443 go to netd's proxy
  bool custom = false;             // only `allow` (besides what the proxy lets through)
  std::vector<std::string> allow;  // normalised IPv4 CIDRs
  std::vector<std::string> deny;   // never, whatever else allows it
  std::vector<std::string> open;   // private ranges opened to this box by its installation
  bool operator==(const SlotRules&) const = default;
};

bool has_rules(const SlotRules& r);

// What the table's comment says, so that a process can tell whether the installed table is the
// one it needs without asking the kernel.
std::string signature(const TableSpec& t);

// The table, replaced as a whole (created if absent, deleted, built again) with every given
// slot's rules in it: one transaction, so there is no moment without a box's rules.
std::string table_ruleset(const TableSpec& t, const std::vector<SlotRules>& slots);

// A slot's rules set to `r` (replacing whatever the slot had), in one transaction.
std::string slot_ruleset(const SlotRules& r);

// A slot's rules removed (no error if it had none).
std::string clear_slot_ruleset(uint32_t slot, const std::string& box_ip);

}  // namespace upstream::firewall
