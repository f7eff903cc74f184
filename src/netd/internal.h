// netd's own pieces, one concern a file: daemon.cc (its life: start, ports, the hand-over),
// stats.cc (per-box counters), policies.cc (a box's policy by its address), peek.cc (the first
// bytes of a connection), relay.cc (bytes both ways), intercept.cc (HTTP request by request,
// with headers added), proxy.cc (the egress proxy), resolver.cc (DNS), expose.cc (exposed ports).
#pragma once

#include <netinet/in.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

#include "common/fd.h"
#include "common/log.h"
#include "common/time.h"
#include "model/egress.h"

namespace upstream::netd {

// The names every netd source uses.
using nlohmann::json;
namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using tcp = boost::asio::ip::tcp;

// The daemon's state: retired once a newer netd took over (listeners close, connections under
// way are served to their end); what is being served, bounded.
extern std::atomic<bool> retired;
extern std::atomic<int> active;
constexpr int kMaxActive = 4096;

// --- stats.cc --------------------------------------------------------------------------------

using nlohmann::json;
struct BoxStats;
nlohmann::json stats_json(const BoxStats& s);
BoxStats stats_from_json(const nlohmann::json& j);

struct Dest {
  uint64_t connections = 0, requests = 0, bytes_out = 0, bytes_in = 0;
  int64_t last_at = 0;
};
struct Denied {
  uint64_t count = 0;
  int64_t last_at = 0;
};
struct BoxStats {
  std::string box_id;
  std::map<std::string, Dest> dests;
  std::map<std::pair<std::string, std::string>, Denied> denied;
  uint64_t dns_queries = 0, dns_refused = 0;
  bool dirty = false;
  // Refusals that wrote the file themselves in the second that began at refusal_window_us.
  int64_t refusal_window_us = 0;
  int refusal_writes = 0;
};

class Counters {
 public:
  template <class F>
  void update(const egress::BoxPolicy& p, F f) {
    if (p.stats_path.empty()) return;
    std::lock_guard g(mu_);
    auto it = boxes_.find(p.stats_path);
    if (it == boxes_.end()) {
      BoxStats s;
      if (auto text = try_read_file(p.stats_path)) try {
          s = stats_from_json(json::parse(*text));
        } catch (const std::exception& e) {
          log(LogLevel::warning, "the counters in " + p.stats_path + " do not parse (" + e.what() +
                                     "); they start again");
        }
      // A file of an earlier box that had this path (ids are unique: never) is not carried.
      if (s.box_id != p.box_id) s = BoxStats{};
      s.box_id = p.box_id;
      it = boxes_.emplace(p.stats_path, std::move(s)).first;
    }
    f(it->second);
    it->second.dirty = true;
  }
  // Counts a refusal and writes the box's file before returning (up to 50 times a second a box;
  // beyond that, a flood, the periodic flush), so that what the box was refused is there to
  // read as soon as the refusal reaches it.
  void deny(const egress::BoxPolicy& p, const std::string& dest, const std::string& reason);
  // Writes what changed; forgets boxes whose stats file's directory is gone (removed boxes).
  void flush();

 private:
  // Writes the file of the box at `only` (every changed box's when null), each from one snapshot.
  void write(const std::string* only);
  std::mutex write_mu_;  // held across a write: a later write always carries newer counts
  std::mutex mu_;
  std::map<std::string, BoxStats> boxes_;
};

extern Counters counters;

// --- policies.cc -----------------------------------------------------------------------------

// The policy of the live box that has this address (nullopt: none, or its box is gone).
std::optional<egress::BoxPolicy> policy_for(uint32_t src);
// The host's own addresses (cached for 2 s).
std::vector<uint32_t> host_addrs();
// Where a box's names are resolved: its policy's resolvers, else the host's.
std::vector<std::string> resolvers(const egress::BoxPolicy& p);

// --- peek.cc ---------------------------------------------------------------------------------

// Peeks (without consuming) until a whole TLS record or HTTP request head is there, the peer
// stops sending for `quiet_ms`, or 16 KiB.
std::string peek_head(int fd, int quiet_ms);

// --- relay.cc --------------------------------------------------------------------------------

void no_delay(int fd);
UniqueFd connect_to(uint32_t ip, uint16_t port, int timeout_ms);
// Copies both ways until both sides are done; counts bytes a -> b (out) and back (in).
void relay(int a, int b, uint64_t& out, uint64_t& in);
// After an upgrade: what each side sent beyond the 101, then both ways as bytes.
void relay_upgraded(int a, int b, boost::beast::flat_buffer& from_a,
                    boost::beast::flat_buffer& from_b, uint64_t& out, uint64_t& in);

// --- intercept.cc ----------------------------------------------------------------------------

// TLS to `host` terminated with a certificate from the installation's CA, each request relayed
// with the headers `hs` added (only to requests for `host`, never to TRACE).
void intercept(UniqueFd box, UniqueFd world, const egress::BoxPolicy& pol, const std::string& host,
               const std::string& dest, const std::vector<std::pair<std::string, std::string>>& hs);
// Plain HTTP request by request, each for the name the connection was allowed for.
void relay_plain_http(UniqueFd box, UniqueFd world, const egress::BoxPolicy& pol,
                      const std::string& allowed, const std::string& dest);

// --- proxy.cc, resolver.cc, expose.cc ----------------------------------------------------------

// One connection redirected from a box to the proxy.
void handle(UniqueFd box);
// One DNS query from a box, answered on `sock`.
void answer_query(int sock, std::string msg, sockaddr_in peer);
// Keeps a listener for every exposure of a live box in the policy files (returns on retiring).
void manage_exposures();

}  // namespace upstream::netd
