// HTTP/1.1 relayed message by message (Boost.Beast), for every path of netd that must look at
// each request rather than the first bytes of a connection: header injection on intercepted
// HTTPS, plain HTTP through the egress proxy, and exposed ports. Each request is read, judged by
// the caller (which may change its headers, or refuse it with a status), relayed with its body
// streamed, and its response relayed back; a connection that upgrades (101) is handed to the
// caller as raw streams.
#pragma once

#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/log.h"

namespace upstream::netd {

namespace http = boost::beast::http;

// The host a request is for, as an origin server takes it: the authority of an absolute-form
// target if it has one, else the Host header; lower-case, without port or trailing dot; "" when
// it names no valid host (see egress::normalise_host).
std::string request_host(const http::request_header<>& h);
// The authority of an absolute-form target ("" for origin-form), normalised the same way.
std::string target_host(const http::request_header<>& h);

struct Refusal {
  http::status status;
  std::string message;
  std::vector<std::pair<std::string, std::string>> headers = {};
};

struct RelayCounts {
  uint64_t requests = 0, bytes_out = 0, bytes_in = 0;
  bool upgraded = false;
};

// Relays one message (its header already read into `p`) from `in` to `out`, the body in chunks;
// returns the bytes written (head and body).
template <bool isRequest, class In, class Out>
uint64_t relay_message(In& in, boost::beast::flat_buffer& buf,
                       http::parser<isRequest, http::buffer_body>& p, Out& out) {
  uint64_t bytes = 0;
  char chunk[65536];
  http::serializer<isRequest, http::buffer_body> sr{p.get()};
  bytes += http::write_header(out, sr);
  while (true) {
    if (!p.is_done()) {
      p.get().body().data = chunk;
      p.get().body().size = sizeof chunk;
      boost::beast::error_code ec;
      http::read(in, buf, p, ec);
      if (ec == http::error::need_buffer) ec = {};
      if (ec) throw boost::beast::system_error(ec);
      p.get().body().size = sizeof chunk - p.get().body().size;
      p.get().body().data = chunk;
      p.get().body().more = !p.is_done();
      bytes += p.get().body().size;
    } else {
      p.get().body().data = nullptr;
      p.get().body().size = 0;
      p.get().body().more = false;
    }
    boost::beast::error_code ec;
    http::write(out, sr, ec);
    if (ec == http::error::need_buffer) ec = {};
    if (ec) throw boost::beast::system_error(ec);
    if (sr.is_done()) break;
  }
  return bytes;
}

// A plain response with a text body, written to `to` (the connection then closes).
template <class Stream>
void send_refusal(Stream& to, const Refusal& r) {
  http::response<http::string_body> res{r.status, 11};
  res.set(http::field::content_type, "text/plain");
  res.set(http::field::connection, "close");
  for (const auto& [k, v] : r.headers) res.set(k, v);
  res.body() = r.message + "\n";
  res.prepare_payload();
  boost::beast::error_code ec;
  http::write(to, res, ec);
}

// Requests from `client` to `server` and their responses back, one at a time, for as long as
// both keep the connection. `judge` sees each request head first: it may change it (add or
// remove headers), or refuse it (the client gets the refusal and the connection closes).
// `upgrade`, if given, takes over after a 101 response with what each side had sent beyond it
// (else the connection closes there). Errors end the relay quietly; the counts say how far it got.
template <class Client, class Server>
RelayCounts relay_http(Client& client, Server& server,
                       const std::function<std::optional<Refusal>(http::request_header<>&)>& judge,
                       const std::function<void(boost::beast::flat_buffer&,
                                                boost::beast::flat_buffer&)>& upgrade = {}) {
  RelayCounts n;
  boost::beast::flat_buffer cbuf, sbuf;
  try {
    while (true) {
      http::request_parser<http::buffer_body> rp;
      rp.body_limit(std::numeric_limits<uint64_t>::max());
      rp.header_limit(64 * 1024);
      boost::beast::error_code ec;
      http::read_header(client, cbuf, rp, ec);
      if (ec) break;
      if (auto no = judge(rp.get().base())) {
        send_refusal(client, *no);
        break;
      }
      bool head = rp.get().method() == http::verb::head;
      bool keep = rp.get().keep_alive();
      n.requests++;
      n.bytes_out += relay_message(client, cbuf, rp, server);
      http::response_parser<http::buffer_body> pp;
      pp.body_limit(std::numeric_limits<uint64_t>::max());
      pp.header_limit(64 * 1024);
      if (head) pp.skip(true);
      http::read_header(server, sbuf, pp, ec);
      if (ec) break;
      bool switching = pp.get().result() == http::status::switching_protocols;
      if (switching && upgrade) {
        // The 101's head goes to the client; what follows is no longer HTTP.
        http::response_serializer<http::buffer_body> sr{pp.get()};
        pp.get().body().data = nullptr;
        pp.get().body().size = 0;
        pp.get().body().more = false;
        http::write_header(client, sr);
        n.upgraded = true;
        upgrade(cbuf, sbuf);
        break;
      }
      keep = keep && pp.get().keep_alive() && !switching;
      n.bytes_in += relay_message(server, sbuf, pp, client);
      if (!keep) break;
    }
  } catch (const std::exception& e) {
    // A peer that goes away mid-message is how relays end; worth a line only when debugging.
    log(LogLevel::debug, std::string("HTTP relay ended: ") + e.what());
  }
  return n;
}

}  // namespace upstream::netd
