
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <map>
#include <mutex>

#include "common/fd.h"
#include "common/time.h"
#include "model/egress.h"
#include "netd/ca.h"
#include "netd/http_relay.h"
#include "netd/internal.h"
#include "netd/netd.h"

namespace upstream::netd {

// --- header injection ------------------------------------------------------------------------

struct MintCache {
  std::mutex mu;
  std::map<std::string, std::shared_ptr<ssl::context>> ctx;  // by CA path and host
};
MintCache mints;

std::shared_ptr<ssl::context> server_context(const egress::BoxPolicy& p, const std::string& host) {
  std::string key = p.ca_cert + "\n" + host;
  std::lock_guard g(mints.mu);
  if (auto it = mints.ctx.find(key); it != mints.ctx.end()) return it->second;
  ca::Minted m = ca::mint(read_file(p.ca_cert), read_file(p.ca_key), host);
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
  ctx->set_options(ssl::context::no_sslv2 | ssl::context::no_sslv3 | ssl::context::no_tlsv1 |
                   ssl::context::no_tlsv1_1);
  ctx->use_certificate_chain(asio::buffer(m.cert_pem));
  ctx->use_private_key(asio::buffer(m.key_pem), ssl::context::pem);
  mints.ctx[key] = ctx;
  return ctx;
}

// The context for TLS to upstreams, per extra trust file: loading the system's CAs takes tens of
// milliseconds, so it is done once.
std::shared_ptr<ssl::context> client_context(const std::string& trust_file) {
  static std::mutex mu;
  static std::map<std::string, std::shared_ptr<ssl::context>> cache;
  std::lock_guard g(mu);
  if (auto it = cache.find(trust_file); it != cache.end()) return it->second;
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_client);
  ctx->set_default_verify_paths();
  for (const char* f : {"/etc/ssl/certs/ca-certificates.crt"})
    if (::access(f, R_OK) == 0) ctx->load_verify_file(f);
  if (!trust_file.empty() && ::access(trust_file.c_str(), R_OK) == 0)
    ctx->load_verify_file(trust_file);
  ctx->set_verify_mode(ssl::verify_peer);
  cache[trust_file] = ctx;
  return ctx;
}

void intercept(UniqueFd box, UniqueFd world, const egress::BoxPolicy& pol, const std::string& host,
               const std::string& dest,
               const std::vector<std::pair<std::string, std::string>>& hs) {
  asio::io_context ioc;
  auto cctx_ptr = client_context(pol.trust_file);
  ssl::context& cctx = *cctx_ptr;
  tcp::socket ws(ioc);
  ws.assign(tcp::v4(), world.release());
  ssl::stream<tcp::socket> up(std::move(ws), cctx);
  SSL_set_tlsext_host_name(up.native_handle(), host.c_str());
  up.set_verify_callback(ssl::host_name_verification(host));
  beast::error_code ec;
  up.handshake(ssl::stream_base::client, ec);
  if (ec) {
    counters.deny(pol, dest, "TLS to " + host + " failed: " + ec.message());
    return;
  }
  auto sctx = server_context(pol, host);
  tcp::socket bs(ioc);
  bs.assign(tcp::v4(), box.release());
  ssl::stream<tcp::socket> client(std::move(bs), *sctx);
  client.handshake(ssl::stream_base::server, ec);
  if (ec) {
    counters.deny(pol, dest, "the box did not accept the proxy's certificate: " + ec.message());
    return;
  }
  // Each request on its own: the headers go only to requests for the host they are for (never
  // to another name behind the same front end), and never back into the box by an echo.
  RelayCounts n = relay_http(client, up, [&](http::request_header<>& h) -> std::optional<Refusal> {
    std::string asked = request_host(h);
    if (asked != host) {
      counters.deny(pol, dest, "a request for " + asked + " on the connection to " + host);
      return Refusal{http::status::misdirected_request,
                     "upstream egress: this connection is to " + host + "; a request for " +
                         (asked.empty() ? std::string("no host") : asked) +
                         " is refused (its headers are for " + host + " only)"};
    }
    if (h.method() == http::verb::trace || h.method_string() == "TRACK") {
      counters.deny(pol, dest,
                    std::string(h.method_string()) + " (it would echo the added headers)");
      return Refusal{http::status::method_not_allowed,
                     "upstream egress: " + std::string(h.method_string()) +
                         " is refused on connections that get added headers"};
    }
    for (const auto& [name, value] : hs) h.set(name, value);
    return std::nullopt;
  });
  counters.update(pol, [&](BoxStats& s) {
    Dest& d = s.dests[dest];
    d.requests += n.requests;
    d.bytes_out += n.bytes_out;
    d.bytes_in += n.bytes_in;
    d.last_at = now_ms();
  });
  client.shutdown(ec);
}

// After an upgrade: what each side sent beyond the 101, then both ways as bytes.
void relay_upgraded(int a, int b, beast::flat_buffer& from_a, beast::flat_buffer& from_b,
                    uint64_t& out, uint64_t& in) {
  auto flush = [](beast::flat_buffer& buf, int to) {
    auto d = buf.data();
    write_all(to, static_cast<const char*>(d.data()), d.size());
    buf.consume(d.size());
  };
  flush(from_a, b);
  flush(from_b, a);
  relay(a, b, out, in);
}

// Plain HTTP through the proxy, request by request: every request must be for the host the
// connection was allowed for (a later one cannot switch to another name on the same
// connection). WebSocket upgrades go on as bytes.
void relay_plain_http(UniqueFd box, UniqueFd world, const egress::BoxPolicy& pol,
                      const std::string& allowed, const std::string& dest) {
  asio::io_context ioc;
  tcp::socket bs(ioc), ws(ioc);
  bs.assign(tcp::v4(), box.release());
  ws.assign(tcp::v4(), world.release());
  uint64_t out = 0, in = 0;
  RelayCounts n = relay_http(
      bs, ws,
      [&](http::request_header<>& h) -> std::optional<Refusal> {
        std::string asked = request_host(h);
        if (asked == allowed) return std::nullopt;
        counters.deny(pol, dest, "a request for " + asked + " on the connection to " + allowed);
        return Refusal{http::status::forbidden,
                       "upstream egress policy: this connection is to " + allowed +
                           "; a request for " + (asked.empty() ? std::string("no host") : asked) +
                           " needs a connection of its own"};
      },
      [&](beast::flat_buffer& from_box, beast::flat_buffer& from_world) {
        relay_upgraded(bs.native_handle(), ws.native_handle(), from_box, from_world, out, in);
      });
  counters.update(pol, [&](BoxStats& s) {
    Dest& d = s.dests[dest];
    // The first request was counted with the connection.
    d.requests += n.requests > 0 ? n.requests - 1 : 0;
    d.bytes_out += n.bytes_out + out;
    d.bytes_in += n.bytes_in + in;
  });
}

}  // namespace upstream::netd
