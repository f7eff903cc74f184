#include "firewall/ruleset.h"

namespace upstream::firewall {

namespace {

std::string join(const std::vector<std::string>& v, const std::string& sep) {
  std::string out;
  for (size_t i = 0; i < v.size(); i++) out += (i ? sep : "") + v[i];
  return out;
}

std::string chain_name(uint32_t slot) { return "s" + std::to_string(slot); }

// The body of a box's chain: private ranges closed (but those opened for it), then its egress
// policy: custom boxes drop denied CIDRs, accept allowed ones and drop the rest; others accept.
std::vector<std::string> chain_rules(const SlotRules& r) {
  std::vector<std::string> out;
  out.push_back("ip daddr @private4 " +
                (r.open.empty() ? std::string() : "ip daddr != { " + join(r.open, ", ") + " } ") +
                "counter drop");
  if (r.custom) {
    if (!r.deny.empty()) out.push_back("ip daddr { " + join(r.deny, ", ") + " } counter drop");
    if (!r.allow.empty()) out.push_back("ip daddr { " + join(r.allow, ", ") + " } accept");
    out.push_back("counter drop");
  } else {
    out.push_back("accept");
  }
  return out;
}

}  // namespace

bool has_rules(const SlotRules& r) { return r.proxied || r.custom || !r.open.empty(); }

std::string signature(const TableSpec& t) {
  return "upstream v2 proxy=" + std::to_string(t.proxy_port) +
         " dns=" + std::to_string(t.dns_port) + " pool=" + t.box_pool;
}

std::string table_ruleset(const TableSpec& t, const std::vector<SlotRules>& slots) {
  std::vector<std::string> proxied, egress;
  std::string chains;
  for (const auto& s : slots) {
    if (!has_rules(s)) continue;
    if (s.proxied) proxied.push_back(s.box_ip);
    egress.push_back(s.box_ip + " : jump " + chain_name(s.slot));
    chains += "  chain " + chain_name(s.slot) + " {\n";
    for (const auto& rule : chain_rules(s)) chains += "    " + rule + "\n";
    chains += "  }\n";
  }
  auto elements = [](const std::vector<std::string>& e) {
    return e.empty() ? std::string() : "    elements = { " + join(e, ", ") + " }\n";
  };
  std::string proxy = std::to_string(t.proxy_port), dns = std::to_string(t.dns_port);
  return "table inet upstream\n"
         "delete table inet upstream\n"
         "table inet upstream {\n"
         "  comment \"" +
         signature(t) +
         "\"\n"
         "  set private4 {\n"
         "    type ipv4_addr; flags interval;\n" +
         elements(t.private_ranges) +
         "  }\n"
         "  set proxied {\n"
         "    type ipv4_addr;\n" +
         elements(proxied) +
         "  }\n"
         "  map egress {\n"
         "    type ipv4_addr : verdict;\n" +
         elements(egress) + "  }\n" + chains +
         // A box's packets come from its own address on its own interface, or not at all: the
         // source must route back through the interface it came in on (its /30), and be the
         // box's end of that /30 (offset 2).
         "  chain guard {\n"
         "    type filter hook prerouting priority raw; policy accept;\n"
         "    iifname \"upv*\" meta nfproto ipv4 fib saddr . iif oif missing counter drop\n"
         "    iifname \"upv*\" meta nfproto ipv4 ip saddr & 0.0.0.3 != 0.0.0.2 counter drop\n"
         "  }\n"
         "  chain prerouting {\n"
         "    type nat hook prerouting priority dstnat; policy accept;\n"
         "    iifname \"upv*\" udp dport 53 redirect to :" +
         dns +
         "\n"
         "    iifname \"upv*\" ip saddr @proxied tcp dport { 80, 443 } redirect to :" +
         proxy +
         "\n"
         "  }\n"
         "  chain input {\n"
         "    type filter hook input priority filter - 10; policy accept;\n"
         "    iifname \"upv*\" ct state established,related accept\n"
         "    iifname \"upv*\" ct status dnat udp dport " +
         dns +
         " accept\n"
         "    iifname \"upv*\" ct status dnat tcp dport " +
         proxy +
         " accept\n"
         "    iifname \"upv*\" counter drop\n"
         "    tcp dport " +
         proxy +
         " drop\n"
         "    udp dport " +
         dns +
         " drop\n"
         "  }\n"
         "  chain forward {\n"
         "    type filter hook forward priority filter - 10; policy accept;\n"
         "    iifname \"upv*\" meta nfproto ipv6 counter drop\n"
         "    iifname \"upv*\" ip daddr " +
         t.box_pool +
         " counter drop\n"
         "    iifname \"upv*\" ip saddr vmap @egress\n"
         "    iifname \"upv*\" ip daddr @private4 counter drop\n"
         "    iifname \"upv*\" accept\n"
         "    oifname \"upv*\" ct state established,related accept\n"
         "    oifname \"upv*\" counter drop\n"
         "  }\n"
         "  chain postrouting {\n"
         "    type nat hook postrouting priority srcnat; policy accept;\n"
         "    ip saddr " +
         t.box_pool +
         " oifname != \"upv*\" masquerade\n"
         "  }\n"
         "}\n";
}

std::string slot_ruleset(const SlotRules& r) {
  if (!has_rules(r)) return clear_slot_ruleset(r.slot, r.box_ip);
  std::string c = chain_name(r.slot), t = "inet upstream";
  // The chain is emptied and refilled in the same transaction: no moment without its rules.
  std::string out = "add chain " + t + " " + c + "\n" + "flush chain " + t + " " + c + "\n";
  for (const auto& rule : chain_rules(r)) out += "add rule " + t + " " + c + " " + rule + "\n";
  out += "add element " + t + " egress { " + r.box_ip + " : jump " + c + " }\n";
  out += "add element " + t + " proxied { " + r.box_ip + " }\n";
  if (!r.proxied) out += "delete element " + t + " proxied { " + r.box_ip + " }\n";
  return out;
}

std::string clear_slot_ruleset(uint32_t slot, const std::string& box_ip) {
  std::string c = chain_name(slot), t = "inet upstream";
  // Added first, so that the deletions never fail on what is not there.
  return "add chain " + t + " " + c + "\n" +                                     //
         "add element " + t + " egress { " + box_ip + " : jump " + c + " }\n" +  //
         "add element " + t + " proxied { " + box_ip + " }\n" +                  //
         "delete element " + t + " egress { " + box_ip + " }\n" +                //
         "delete element " + t + " proxied { " + box_ip + " }\n" +               //
         "flush chain " + t + " " + c + "\n" +                                   //
         "delete chain " + t + " " + c + "\n";
}

}  // namespace upstream::firewall
