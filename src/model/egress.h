// Egress policy: what a box with a network may reach. Checked twice, where it cannot be spoofed:
// by the host firewall for addresses (allowed and denied CIDRs, private ranges), and by the host
// proxy and resolver (netd) for names (allowed domains), which re-resolve every name on the host.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/box.h"

namespace upstream::egress {

// Box networks: 10.200.0.0/14, a /30 per uid slot (host end .1, box end .2 of its /30): room
// for every uid slot (see runtime/slots.h).
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

// Parses an IPv4 CIDR ("10.1.0.0/16", or an address as /32); throws invalid_argument naming
// `what`. Returns it normalised.
std::string parse_cidr(const std::string& text, const std::string& what);

// Ranges no box reaches unless the operator opens them (network.open_private): unspecified,
// RFC 1918, CGNAT, loopback, link-local (cloud metadata), multicast and reserved.
const std::vector<std::string>& private_ranges();

// "api.example.com" or "*.example.com" (any name below example.com, not example.com itself),
// lower-cased; throws invalid_argument naming `what`.
std::string parse_domain_pattern(const std::string& text, const std::string& what);
bool domain_matches(const std::string& pattern, const std::string& host);
// A host name as it arrives in an SNI or Host header: lower-cased, port and trailing dot cut;
// "" for what is no host name (other characters, a port that is not one). Idempotent.
std::string normalise_host(std::string host);

// Header names are RFC 9110 tokens; values hold no CR, LF or NUL. Throws invalid_argument.
void check_header(const std::string& name, const std::string& value);

// Checks (and normalises) a spec's egress for its network mode: lists only with custom, headers
// only with a network, every CIDR, pattern and header valid.
void validate(NetworkMode mode, Egress& e);

// JSON: {"allow_domains": [...], "allow_cidrs": [...], "deny_cidrs": [...], "headers": {...}}.
// With values=false the headers show their names only (what fronts show: values are secrets).
nlohmann::json to_json(const Egress& e, bool values);
// Throws invalid_argument naming the field.
Egress from_json(const nlohmann::json& j);

struct Cidr {
  uint32_t net = 0;  // host order
  uint32_t mask = 0;
  std::string text;
  bool contains(uint32_t ip) const { return (ip & mask) == net; }
};
Cidr cidr(const std::string& normalised);
std::optional<uint32_t> parse_ipv4(const std::string& text);
std::string ipv4_string(uint32_t ip);

// A port of a box reachable from the host (`box expose`): netd listens on address:host_port and
// forwards HTTP and WebSocket traffic carrying the credentials to the box's port.
struct Exposure {
  std::string id;
  uint16_t port = 0;       // in the box
  uint16_t host_port = 0;  // on the host
  std::string address;     // the host address it listens on
  std::string auth;        // bearer | basic
  std::string username;    // basic
  std::string hash;        // sha256 hex of the token (bearer) or of "username:password" (basic)
  int64_t created_at = 0;
};
nlohmann::json exposure_to_json(const Exposure& e);  // with the hash: for files only
Exposure exposure_from_json(const nlohmann::json& j);

// What netd knows of one box with a network: written by the engine to the host-wide run
// directory (one file per uid slot) whenever the box starts or its network changes.
struct BoxPolicy {
  std::string box_id;
  std::string box_name;
  std::string box_ip;
  pid_t init_pid = 0;
  uint64_t init_start = 0;
  NetworkMode mode = NetworkMode::allow_all;
  Egress egress;
  std::vector<std::string> open_private;  // operator-opened ranges
  std::vector<std::string> resolvers;     // empty: the host's resolv.conf
  std::string ca_cert, ca_key;            // the installation's CA (header injection)
  std::string stats_path;                 // where netd keeps the box's counters
  std::string trust_file;  // CAs trusted (besides the system's) for intercepted upstreams
  std::vector<Exposure> exposures;
};
nlohmann::json policy_to_json(const BoxPolicy& p);
BoxPolicy policy_from_json(const nlohmann::json& j);

// Why an address may not be reached from the box, or nullopt. `host_addrs`: the host's own.
// `named`: the address is what an allowed name resolved to (custom mode then needs no allowed
// CIDR for it; denied CIDRs and private ranges still apply).
std::optional<std::string> address_blocked(const BoxPolicy& p, uint32_t ip,
                                           const std::vector<uint32_t>& host_addrs, bool named);
// Whether a box's TCP 80/443 goes through netd's proxy: mode custom, or headers to inject.
bool proxied(NetworkMode mode, const Egress& e);
// Whether a name is allowed (allow-all: any; custom: a matching allowed domain).
bool name_allowed(const BoxPolicy& p, const std::string& host);
// The headers to add to requests to `host` (all matching patterns), empty when none.
std::vector<std::pair<std::string, std::string>> headers_for(const BoxPolicy& p,
                                                             const std::string& host);

}  // namespace upstream::egress
