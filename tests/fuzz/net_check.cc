// Properties of netd's parsers of box-controlled bytes (netd runs as host root): DNS queries and
// responses, the TLS SNI and HTTP Host peekers, and HTTP request heads read by Beast.
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "check.h"
#include "common/error.h"
#include "model/egress.h"
#include "netd/dns.h"
#include "netd/http_relay.h"
#include "netd/netd.h"

namespace upstream::fuzz {

namespace {

void require(bool ok, const std::string& what) {
  if (!ok) throw Finding(what);
}

bool inside(std::string_view input, const std::string& part) {
  return input.find(part) != std::string_view::npos;
}

}  // namespace

void check_dns(std::string_view input) {
  std::string msg(input);
  if (auto q = dns::parse_query(msg)) {
    require(q->end <= msg.size(), "question ends past the message");
    for (char c : q->name) require(!(c >= 'A' && c <= 'Z'), "name not lower-cased: " + q->name);
    require(q->name.empty() || q->name.back() != '.', "name keeps its trailing dot");
    // The answer netd gives parses back to what it was made with, and its addresses are seen by
    // the check that keeps blocked addresses from boxes.
    const std::vector<uint32_t> addrs = {0x0a000001, 0xc0000201};
    std::string ans = dns::answer(msg, *q, dns::kNoError, addrs, 60);
    auto r = dns::parse_response(ans, q->id);
    require(r.has_value(), "netd's own answer does not parse");
    require(r->rcode == dns::kNoError, "answer's rcode changed");
    require(r->addrs == addrs, "answer's addresses changed");
    require(dns::carries_blocked_address(ans, [](uint32_t a) { return a == 0x0a000001; }),
            "a blocked address in netd's own answer was not seen");
    require(!dns::carries_blocked_address(ans, [](uint32_t) { return false; }),
            "an answer with nothing blocked was refused");
  }
  // Any response: an address it gives is never missed by the blocked-address check.
  if (msg.size() >= 2) {
    uint16_t id =
        static_cast<uint16_t>((static_cast<uint8_t>(msg[0]) << 8) | static_cast<uint8_t>(msg[1]));
    auto r = dns::parse_response(msg, id);
    if (r && !r->addrs.empty())
      require(dns::carries_blocked_address(msg, [](uint32_t) { return true; }),
              "a response's A record escaped the blocked-address check");
  }
}

void check_peek(std::string_view input) {
  std::string bytes(input);
  std::string sni = netd::tls_sni(bytes);
  require(sni.size() <= 0xffff, "SNI longer than its length field allows");
  require(sni.empty() || inside(input, sni), "SNI not taken from the record");
  std::string host = netd::http_host(bytes);
  require(host.find_first_of("\r\n") == std::string::npos, "Host carries a line break");
  require(host.empty() || inside(input, host), "Host not taken from the head");
}

void check_http_head(std::string_view input) {
  namespace beast = boost::beast;
  namespace http = beast::http;
  http::request_parser<http::empty_body> parser;
  parser.header_limit(16 * 1024);
  parser.eager(false);
  beast::error_code ec;
  parser.put(boost::asio::buffer(input.data(), input.size()), ec);
  if (ec || !parser.is_header_done()) return;
  const auto& h = parser.get().base();
  std::string target = netd::target_host(h), host = netd::request_host(h);
  // A host netd checks against a policy is in its one normal form.
  if (!target.empty()) {
    require(egress::normalise_host(target) == target, "target host not normal: " + target);
    require(host == target, "an absolute target must win over the Host header");
  }
  require(egress::normalise_host(host) == host, "request host not normal: " + host);
  require(host.find_first_of("/\r\n ") == std::string::npos, "request host carries " + host);
}

}  // namespace upstream::fuzz
