// The little of DNS netd needs: read a box's query, answer it, and resolve names (A records) on
// the host against the configured resolvers.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace upstream::dns {

constexpr uint16_t kTypeA = 1;
constexpr uint16_t kTypeAAAA = 28;
constexpr uint16_t kTypeSVCB = 64, kTypeHTTPS = 65, kTypeANY = 255;
constexpr uint8_t kNoError = 0, kServFail = 2, kNxDomain = 3, kRefused = 5;

struct Question {
  uint16_t id = 0;
  uint16_t flags = 0;
  std::string name;  // lower-case, no trailing dot
  uint16_t qtype = 0;
  uint16_t qclass = 0;
  size_t end = 0;  // offset just past the question
};

// A standard query with one question; nullopt for anything else (responses, truncated data).
std::optional<Question> parse_query(const std::string& msg);

// The answer to `query`: its question echoed, `rcode`, and A records for `addrs`.
std::string answer(const std::string& query, const Question& q, uint8_t rcode,
                   const std::vector<uint32_t>& addrs, uint32_t ttl);

std::string build_query(uint16_t id, const std::string& name, uint16_t qtype);

struct Result {
  uint8_t rcode = kServFail;
  std::vector<uint32_t> addrs;  // A records (host order), following CNAMEs in the answer
  uint32_t ttl = 0;             // the smallest TTL of those records
};
// Parses a response to a query with `id`; nullopt if it is not one.
std::optional<Result> parse_response(const std::string& msg, uint16_t id);

// The IPv4 nameservers of a resolv.conf.
std::vector<std::string> resolv_conf_servers(const std::string& path = "/etc/resolv.conf");

// Resolves `name` (A) over UDP against each resolver in turn, each with `timeout_ms`; a failure
// of all of them gives rcode SERVFAIL.
Result resolve_a(const std::vector<std::string>& resolvers, const std::string& name,
                 int timeout_ms = 2000);
// Whether a response carries an address a box must not be given, in any section: an A record
// `blocked` refuses, any AAAA (boxes have no IPv6), any SVCB/HTTPS record (their address hints
// are not looked into). A response that does not parse counts as carrying one.
bool carries_blocked_address(const std::string& msg, const std::function<bool(uint32_t)>& blocked);

// Forwards a raw query to the resolvers and returns the raw response (empty on failure).
std::string forward(const std::vector<std::string>& resolvers, const std::string& query,
                    int timeout_ms = 2000);

}  // namespace upstream::dns
