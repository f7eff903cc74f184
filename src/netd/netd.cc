#include "netd/netd.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <linux/close_range.h>
#include <linux/netfilter_ipv4.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <algorithm>
#include <atomic>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <mutex>
#include <thread>

#include "common/digest.h"
#include "common/error.h"
#include "common/fd.h"
#include "common/fs.h"
#include "common/ipc.h"
#include "common/proc.h"
#include "common/strings.h"
#include "common/time.h"
#include "model/egress.h"
#include "netd/ca.h"
#include "netd/dns.h"
#include "netd/http_relay.h"
#include "runtime/net.h"

namespace upstream::netd {

using nlohmann::json;
namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using tcp = boost::asio::ip::tcp;

std::string run_dir() { return "/run/upstream/net"; }
std::string policy_path(uint32_t slot) { return run_dir() + "/" + std::to_string(slot) + ".json"; }

std::vector<uint32_t> policy_slots() { return numbered_files(run_dir(), ".json"); }

namespace {

// True if somebody holds the lock at `path` (taking it ourselves releases it at once).
bool lock_held(const std::string& path) { return !FileLock::try_lock(path); }

// What netd.json says of the running netd, if one serves: its ports, and whether this build
// should take over from it (a netd that speaks an older protocol), which it does by a hand-over.
struct Running {
  Ports ports;
  int protocol = 0;
  int64_t built = 0;  // the modification time (ns) of its executable
};

int64_t built_ns(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return 0;
  return static_cast<int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
}

std::optional<Running> read_running() {
  auto text = try_read_file(run_dir() + "/netd.json");
  if (!text) return std::nullopt;
  try {
    json j = json::parse(*text);
    Running r;
    r.ports = {j.at("pid").get<int>(), j.at("proxy").get<uint16_t>(), j.at("dns").get<uint16_t>()};
    r.protocol = j.value("protocol", 0);
    r.built = j.value("built", int64_t{0});
    if (::kill(r.ports.pid, 0) != 0 || !lock_held(run_dir() + "/netd.lock")) return std::nullopt;
    return r;
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

// The protocol this build's netd speaks (policy files, the firewall's redirects, the hand-over).
// A running netd of a newer protocol, or of the same one and a build at least as recent, is used
// whichever build it is; an older one is taken over from, once, by a hand-over (so two
// installations of different builds never take turns). UPSTREAM_NETD_PROTOCOL stands in for a
// newer protocol in the hand-over tests.
int protocol() {
  static const int p = [] {
    const char* v = std::getenv("UPSTREAM_NETD_PROTOCOL");
    return v && *v ? std::max(2, std::atoi(v)) : 2;
  }();
  return p;
}

// Whether a running netd serves this build as it is (else this build takes over from it).
bool serves_us(const Running& r, const std::string& exe) {
  if (r.protocol != protocol()) return r.protocol > protocol();
  return r.built >= built_ns(exe);
}

std::optional<Ports> read_ports(const std::string& exe) {
  auto r = read_running();
  if (!r || !serves_us(*r, exe)) return std::nullopt;
  return r->ports;
}

// --- counters --------------------------------------------------------------------------------

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
};

json stats_json(const BoxStats& s) {
  json d = json::object();
  for (const auto& [k, v] : s.dests)
    d[k] = {{"connections", v.connections},
            {"requests", v.requests},
            {"bytes_out", v.bytes_out},
            {"bytes_in", v.bytes_in},
            {"last_at", format_time(v.last_at)}};
  json den = json::array();
  for (const auto& [k, v] : s.denied)
    den.push_back({{"destination", k.first},
                   {"reason", k.second},
                   {"count", v.count},
                   {"last_at", format_time(v.last_at)}});
  return {{"box_id", s.box_id},
          {"destinations", d},
          {"denied", den},
          {"dns", {{"queries", s.dns_queries}, {"refused", s.dns_refused}}}};
}

BoxStats stats_from_json(const json& j) {
  BoxStats s;
  s.box_id = j.value("box_id", "");
  if (j.contains("destinations"))
    for (const auto& [k, v] : j["destinations"].items()) {
      Dest d;
      d.connections = v.value("connections", uint64_t{0});
      d.requests = v.value("requests", uint64_t{0});
      d.bytes_out = v.value("bytes_out", uint64_t{0});
      d.bytes_in = v.value("bytes_in", uint64_t{0});
      d.last_at = parse_time(v.value("last_at", ""));
      s.dests[k] = d;
    }
  if (j.contains("denied"))
    for (const auto& v : j["denied"]) {
      Denied d;
      d.count = v.value("count", uint64_t{0});
      d.last_at = parse_time(v.value("last_at", ""));
      s.denied[{v.value("destination", ""), v.value("reason", "")}] = d;
    }
  if (j.contains("dns")) {
    s.dns_queries = j["dns"].value("queries", uint64_t{0});
    s.dns_refused = j["dns"].value("refused", uint64_t{0});
  }
  return s;
}

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
        } catch (const std::exception&) {
        }
      // A file of an earlier box that had this path (ids are unique: never) is not carried.
      if (s.box_id != p.box_id) s = BoxStats{};
      s.box_id = p.box_id;
      it = boxes_.emplace(p.stats_path, std::move(s)).first;
    }
    f(it->second);
    it->second.dirty = true;
  }
  void deny(const egress::BoxPolicy& p, const std::string& dest, const std::string& reason) {
    update(p, [&](BoxStats& s) {
      auto& d = s.denied[{dest, reason}];
      d.count++;
      d.last_at = now_ms();
    });
  }
  // Writes what changed; forgets boxes whose stats file's directory is gone (removed boxes).
  void flush() {
    std::map<std::string, json> out;
    {
      std::lock_guard g(mu_);
      for (auto& [path, s] : boxes_)
        if (s.dirty) {
          out[path] = stats_json(s);
          s.dirty = false;
        }
    }
    for (const auto& [path, j] : out) {
      std::string parent = path.substr(0, path.find_last_of('/'));
      struct stat st;
      if (::stat(parent.c_str(), &st) != 0) {
        std::lock_guard g(mu_);
        boxes_.erase(path);
        continue;
      }
      try {
        write_file_atomic(path, j.dump() + "\n", 0600);
      } catch (const std::exception&) {
      }
    }
  }

 private:
  std::mutex mu_;
  std::map<std::string, BoxStats> boxes_;
};

Counters counters;

// --- policies --------------------------------------------------------------------------------

std::optional<egress::BoxPolicy> policy_for(uint32_t src) {
  egress::Cidr pool = egress::cidr(egress::kBoxNetPool);
  if (!pool.contains(src)) return std::nullopt;
  uint32_t slot = (src - pool.net) / 4;
  auto text = try_read_file(policy_path(slot));
  if (!text) return std::nullopt;
  try {
    egress::BoxPolicy p = egress::policy_from_json(json::parse(*text));
    if (p.box_ip != egress::ipv4_string(src) || !process_matches(p.init_pid, p.init_start))
      return std::nullopt;  // the file of a box that is gone
    return p;
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

std::vector<uint32_t> host_addrs() {
  static std::mutex mu;
  static std::vector<uint32_t> cached;
  static int64_t at = 0;
  std::lock_guard g(mu);
  if (mono_us() - at < 2'000'000) return cached;
  cached.clear();
  ifaddrs* ifs = nullptr;
  if (::getifaddrs(&ifs) == 0) {
    for (ifaddrs* i = ifs; i; i = i->ifa_next)
      if (i->ifa_addr && i->ifa_addr->sa_family == AF_INET)
        cached.push_back(ntohl(reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr.s_addr));
    ::freeifaddrs(ifs);
  }
  at = mono_us();
  return cached;
}

std::vector<std::string> resolvers(const egress::BoxPolicy& p) {
  return p.resolvers.empty() ? dns::resolv_conf_servers() : p.resolvers;
}

// --- the first bytes of a connection ---------------------------------------------------------

// Peeks (without consuming) until a whole TLS record or HTTP request head is there, the peer
// stops sending for `quiet_ms`, or 16 KiB.
std::string peek_head(int fd, int quiet_ms) {
  char buf[16389];
  std::string head;
  int64_t deadline = mono_us() + int64_t{quiet_ms} * 1000;
  size_t last = 0;
  while (true) {
    int left = static_cast<int>((deadline - mono_us()) / 1000);
    if (left <= 0) return head;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, left) <= 0) return head;
    ssize_t n = ::recv(fd, buf, sizeof buf, MSG_PEEK);
    if (n <= 0) return head;
    head.assign(buf, static_cast<size_t>(n));
    if (head[0] == 0x16) {
      if (head.size() >= 5) {
        size_t need = 5 + ((static_cast<uint8_t>(head[3]) << 8) | static_cast<uint8_t>(head[4]));
        if (head.size() >= std::min(need, sizeof buf)) return head;
      }
    } else if (!std::isalpha(static_cast<unsigned char>(head[0])) ||
               head.find("\r\n\r\n") != std::string::npos || head.size() >= sizeof buf) {
      return head;
    }
    if (head.size() == last)
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    else
      deadline = mono_us() + int64_t{quiet_ms} * 1000;
    last = head.size();
  }
}

}  // namespace

std::string tls_sni(const std::string& h) {
  auto u8 = [&](size_t i) { return static_cast<uint8_t>(h[i]); };
  auto u16 = [&](size_t i) { return static_cast<size_t>((u8(i) << 8) | u8(i + 1)); };
  size_t p = 5;
  if (h.size() < p + 4 || u8(p) != 1) return "";
  p += 4 + 2 + 32;
  if (h.size() < p + 1) return "";
  p += 1 + u8(p);
  if (h.size() < p + 2) return "";
  p += 2 + u16(p);
  if (h.size() < p + 1) return "";
  p += 1 + u8(p);
  if (h.size() < p + 2) return "";
  size_t end = std::min(h.size(), p + 2 + u16(p));
  p += 2;
  while (p + 4 <= end) {
    size_t type = u16(p), len = u16(p + 2);
    p += 4;
    if (p + len > end) return "";
    if (type == 0 && len >= 5 && u8(p + 2) == 0) {
      size_t n = u16(p + 3);
      if (p + 5 + n <= end) return h.substr(p + 5, n);
      return "";
    }
    p += len;
  }
  return "";
}

std::string http_host(const std::string& head) {
  for (const auto& line : split(head.substr(0, head.find("\r\n\r\n")), '\n')) {
    std::string l = trim(line);
    if (l.size() > 5 && strncasecmp(l.c_str(), "host:", 5) == 0) return trim(l.substr(5));
  }
  return "";
}

namespace {

// Relayed writes go out as they come (a response's head and body are separate writes; Nagle
// would hold the second for the peer's delayed ACK).
void no_delay(int fd) {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

UniqueFd connect_to(uint32_t ip, uint16_t port, int timeout_ms) {
  UniqueFd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!s) return s;
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  sa.sin_addr.s_addr = htonl(ip);
  if (::connect(s.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    if (errno != EINPROGRESS) return UniqueFd();
    pollfd p{s.get(), POLLOUT, 0};
    if (::poll(&p, 1, timeout_ms) <= 0) return UniqueFd();
    int err = 0;
    socklen_t len = sizeof err;
    ::getsockopt(s.get(), SOL_SOCKET, SO_ERROR, &err, &len);
    if (err) return UniqueFd();
  }
  set_nonblocking(s.get(), false);
  no_delay(s.get());
  return s;
}

// Copies both ways until both sides are done; counts bytes box -> world and back. The bytes move
// through a pipe per direction with splice(2): never copied through this process.
void relay(int box, int world, uint64_t& out, uint64_t& in) {
  Pipe pipes[2] = {make_pipe(O_CLOEXEC), make_pipe(O_CLOEXEC)};
  for (auto& p : pipes) ::fcntl(p.write.get(), F_SETPIPE_SZ, 1 << 20);
  bool open[2] = {true, true};
  while (open[0] || open[1]) {
    pollfd p[2] = {{open[0] ? box : -1, POLLIN, 0}, {open[1] ? world : -1, POLLIN, 0}};
    if (::poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    for (int i = 0; i < 2; i++) {
      if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      int from = i == 0 ? box : world, to = i == 0 ? world : box;
      ssize_t n = ::splice(from, nullptr, pipes[i].write.get(), nullptr, 1 << 20,
                           SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (n < 0 && errno == EAGAIN) continue;
      if (n <= 0) {
        ::shutdown(to, SHUT_WR);
        open[i] = false;
        if (n < 0) return;
        continue;
      }
      for (ssize_t left = n; left > 0;) {
        ssize_t m = ::splice(pipes[i].read.get(), nullptr, to, nullptr, static_cast<size_t>(left),
                             SPLICE_F_MOVE);
        if (m <= 0) return;
        left -= m;
      }
      (i == 0 ? out : in) += static_cast<uint64_t>(n);
    }
  }
}

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

// --- the proxy -------------------------------------------------------------------------------

void handle(UniqueFd box) {
  sockaddr_in peer{}, orig{};
  socklen_t len = sizeof peer;
  if (::getpeername(box.get(), reinterpret_cast<sockaddr*>(&peer), &len) != 0) return;
  len = sizeof orig;
  if (::getsockopt(box.get(), SOL_IP, SO_ORIGINAL_DST, &orig, &len) != 0) return;
  auto pol = policy_for(ntohl(peer.sin_addr.s_addr));
  if (!pol) return;
  uint32_t orig_ip = ntohl(orig.sin_addr.s_addr);
  uint16_t port = ntohs(orig.sin_port);
  std::string head = peek_head(box.get(), 3000);
  bool tls = !head.empty() && head[0] == 0x16;
  bool is_http = !tls && !head.empty() && head.find("\r\n\r\n") != std::string::npos;
  std::string name = egress::normalise_host(tls ? tls_sni(head) : is_http ? http_host(head) : "");
  if (egress::parse_ipv4(name)) name.clear();
  std::string dest =
      (name.empty() ? egress::ipv4_string(orig_ip) : name) + ":" + std::to_string(port);
  std::optional<uint32_t> target;
  std::string reason;
  auto hosts = host_addrs();
  if (!name.empty() && egress::name_allowed(*pol, name)) {
    dns::Result r = dns::resolve_a(resolvers(*pol), name);
    for (uint32_t a : r.addrs) {
      if (auto why = egress::address_blocked(*pol, a, hosts, true)) {
        if (reason.empty()) reason = name + " resolves to " + *why;
      } else {
        target = a;
        break;
      }
    }
    if (r.addrs.empty()) reason = name + " does not resolve on the host";
  } else if (auto why = egress::address_blocked(*pol, orig_ip, hosts, false)) {
    reason = name.empty() ? *why : "domain " + name + " is not allowed";
  } else {
    target = orig_ip;
  }
  if (!target) {
    counters.deny(*pol, dest, reason);
    if (is_http) {
      std::string body = "upstream egress policy: " + reason + "\n";
      std::string resp = "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: " +
                         std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
      // The request is still unread: read it so the close does not reset the reply.
      char sink[16389];
      (void)::recv(box.get(), sink, std::min(head.size(), sizeof sink), 0);
      try {
        write_all(box.get(), resp);
      } catch (const std::exception&) {
      }
      ::shutdown(box.get(), SHUT_WR);
    }
    return;
  }
  UniqueFd world = connect_to(*target, port, 10000);
  if (!world) {
    counters.deny(*pol, dest, "could not connect to " + egress::ipv4_string(*target));
    return;
  }
  counters.update(*pol, [&](BoxStats& s) {
    Dest& d = s.dests[dest];
    d.connections++;
    if (is_http) d.requests++;
    d.last_at = now_ms();
  });
  if (tls && !name.empty() && !pol->ca_cert.empty()) {
    if (auto hs = egress::headers_for(*pol, name); !hs.empty()) {
      intercept(std::move(box), std::move(world), *pol, name, dest, hs);
      return;
    }
  }
  if (is_http) {
    relay_plain_http(std::move(box), std::move(world), *pol,
                     egress::normalise_host(http_host(head)), dest);
    return;
  }
  uint64_t out = 0, in = 0;
  relay(box.get(), world.get(), out, in);
  counters.update(*pol, [&](BoxStats& s) {
    Dest& d = s.dests[dest];
    d.bytes_out += out;
    d.bytes_in += in;
  });
}

// --- the resolver ----------------------------------------------------------------------------

void answer_query(int sock, std::string msg, sockaddr_in peer) {
  auto pol = policy_for(ntohl(peer.sin_addr.s_addr));
  if (!pol) return;
  auto q = dns::parse_query(msg);
  if (!q) return;
  std::string resp;
  bool allowed = egress::name_allowed(*pol, q->name);
  counters.update(*pol, [&](BoxStats& s) {
    s.dns_queries++;
    if (!allowed) s.dns_refused++;
  });
  if (!allowed) {
    counters.deny(*pol, q->name, "domain " + q->name + " is not allowed (DNS)");
    resp = dns::answer(msg, *q, dns::kNxDomain, {}, 0);
  } else if (q->qtype == dns::kTypeA) {
    dns::Result r = dns::resolve_a(resolvers(*pol), q->name);
    std::vector<uint32_t> ok;
    auto hosts = host_addrs();
    for (uint32_t a : r.addrs) {
      if (auto why = egress::address_blocked(*pol, a, hosts, true))
        counters.deny(*pol, q->name, q->name + " resolves to " + *why + " (DNS)");
      else
        ok.push_back(a);
    }
    resp = dns::answer(msg, *q, r.rcode, ok, std::min<uint32_t>(r.ttl, 300));
  } else if (q->qtype == dns::kTypeAAAA) {
    resp = dns::answer(msg, *q, dns::kNoError, {}, 0);  // boxes have no IPv6
  } else if (q->qtype == dns::kTypeANY || q->qtype == dns::kTypeSVCB ||
             q->qtype == dns::kTypeHTTPS) {
    // Records whose addresses (hints) netd does not look into: an empty answer, so clients ask
    // for A records, which it filters.
    resp = dns::answer(msg, *q, dns::kNoError, {}, 0);
  } else {
    resp = dns::forward(resolvers(*pol), msg);
    auto hosts = host_addrs();
    auto blocked = [&](uint32_t a) {
      return egress::address_blocked(*pol, a, hosts, true).has_value();
    };
    if (resp.empty()) {
      resp = dns::answer(msg, *q, dns::kServFail, {}, 0);
    } else if (dns::carries_blocked_address(resp, blocked)) {
      counters.deny(*pol, q->name,
                    "the answer for " + q->name + " (type " + std::to_string(q->qtype) +
                        ") carries an address boxes may not be given (DNS)");
      resp = dns::answer(msg, *q, dns::kNoError, {}, 0);
    }
  }
  ::sendto(sock, resp.data(), resp.size(), 0, reinterpret_cast<sockaddr*>(&peer), sizeof peer);
}

// --- exposed ports ---------------------------------------------------------------------------

// Set when a newer netd took over: listeners close (their queued connections move to the new
// netd's sockets, which share the ports), connections under way are served to their end.
std::atomic<bool> retired{false};
std::atomic<int> active{0};  // connections and queries being served
constexpr int kMaxActive = 4096;

struct ExposeTarget {
  egress::Exposure e;
  pid_t init_pid = 0;
  uint64_t init_start = 0;
};
std::mutex expose_mu;
std::map<uint16_t, ExposeTarget> expose_targets;  // by host port

bool credentials_ok(const egress::Exposure& e, const std::string& authorization) {
  std::string scheme = e.auth == "bearer" ? "bearer " : "basic ";
  if (authorization.size() <= scheme.size() ||
      strncasecmp(authorization.c_str(), scheme.c_str(), scheme.size()) != 0)
    return false;
  std::string cred = trim(authorization.substr(scheme.size()));
  if (e.auth == "basic") {
    auto decoded = base64_decode(cred);
    if (!decoded) return false;
    cred = *decoded;
  }
  std::string got = sha256_hex(cred);
  // Compared in constant time, as API keys are (the hash of a guess says nothing, but keep it so).
  return got.size() == e.hash.size() && CRYPTO_memcmp(got.data(), e.hash.data(), got.size()) == 0;
}

// A connection to `port` on the loopback of the box's network namespace (so servers bound to
// 127.0.0.1 inside the box are reachable too).
UniqueFd connect_in_box(const ExposeTarget& t) {
  UniqueFd out;
  if (!process_matches(t.init_pid, t.init_start)) return out;
  UniqueFd ns(
      ::open(("/proc/" + std::to_string(t.init_pid) + "/ns/net").c_str(), O_RDONLY | O_CLOEXEC));
  if (!ns) return out;
  std::thread th([&] {
    if (::setns(ns.get(), CLONE_NEWNET) != 0) return;
    out = connect_to(0x7f000001, t.e.port, 5000);
  });
  th.join();
  return out;
}

// Every request is authenticated, and its credentials removed, before it reaches the box (a
// client's second request on a kept-alive connection too); nothing reaches the box, not even a
// connection, before a request has shown them. A WebSocket upgrade is relayed for as long as it
// lasts.
void serve_exposed(UniqueFd c, ExposeTarget t) {
  asio::io_context ioc;
  tcp::socket client(ioc), box(ioc);
  client.assign(tcp::v4(), c.release());
  relay_http(
      client, box,
      [&](http::request_header<>& h) -> std::optional<Refusal> {
        if (!credentials_ok(t.e, std::string(h[http::field::authorization])))
          return Refusal{http::status::unauthorized,
                         "upstream: this port needs its credentials",
                         {{"WWW-Authenticate", t.e.auth == "bearer" ? "Bearer realm=\"upstream\""
                                                                    : "Basic realm=\"upstream\""}}};
        h.erase(http::field::authorization);
        if (!box.is_open()) {
          UniqueFd in = connect_in_box(t);
          if (!in)
            return Refusal{http::status::bad_gateway,
                           "upstream: nothing accepts connections on port " +
                               std::to_string(t.e.port) + " in the box"};
          box.assign(tcp::v4(), in.release());
        }
        return std::nullopt;
      },
      [&](beast::flat_buffer& from_client, beast::flat_buffer& from_box) {
        uint64_t a = 0, b = 0;
        relay_upgraded(client.native_handle(), box.native_handle(), from_client, from_box, a, b);
      });
}

void accept_exposed(int fd, uint16_t port) {
  while (true) {
    int c = ::accept4(fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      ::close(fd);  // shut down: the exposure went away
      return;
    }
    std::optional<ExposeTarget> t;
    {
      std::lock_guard g(expose_mu);
      if (auto it = expose_targets.find(port); it != expose_targets.end()) t = it->second;
    }
    if (!t) {
      ::close(c);
      continue;
    }
    no_delay(c);
    active++;
    std::thread([c, t = *t] {
      try {
        serve_exposed(UniqueFd(c), t);
      } catch (const std::exception&) {
      }
      active--;
    }).detach();
  }
}

// Keeps a listener for every exposure of a live box in the policy files, and none other.
void manage_exposures() {
  std::map<uint16_t, std::pair<int, std::string>> open;  // host port -> (fd, address)
  while (true) {
    if (retired) {
      for (const auto& [port, l] : open) ::shutdown(l.first, SHUT_RDWR);
      return;
    }
    std::map<uint16_t, ExposeTarget> want;
    for (uint32_t slot : policy_slots()) {
      try {
        auto p = egress::policy_from_json(json::parse(read_file(policy_path(slot))));
        if (!process_matches(p.init_pid, p.init_start)) continue;
        for (const auto& e : p.exposures) want[e.host_port] = {e, p.init_pid, p.init_start};
      } catch (const std::exception&) {
      }
    }
    {
      std::lock_guard g(expose_mu);
      expose_targets = want;
    }
    for (auto it = open.begin(); it != open.end();) {
      auto w = want.find(it->first);
      if (w == want.end() || w->second.e.address != it->second.second) {
        ::shutdown(it->second.first, SHUT_RDWR);  // its accept loop closes it
        it = open.erase(it);
      } else {
        ++it;
      }
    }
    for (const auto& [port, t] : want) {
      if (open.count(port)) continue;
      int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      int one = 1;
      ::setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
      ::setsockopt(s, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);  // a successor binds it too
      sockaddr_in sa{};
      sa.sin_family = AF_INET;
      sa.sin_port = htons(port);
      ::inet_pton(AF_INET, t.e.address.c_str(), &sa.sin_addr);
      if (::bind(s, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 || ::listen(s, 256) != 0) {
        std::fprintf(stderr, "netd: cannot listen on %s:%u for exposure %s: %s\n",
                     t.e.address.c_str(), port, t.e.id.c_str(), std::strerror(errno));
        ::close(s);
        continue;
      }
      open[port] = {s, t.e.address};
      std::thread(accept_exposed, s, port).detach();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

// Binds `port` if it is free (a restarted netd keeps its predecessor's ports: the firewall and
// the kernel's connection tracking still point there), else any port; with `exact`, that port
// or nothing (a hand-over shares its predecessor's ports: every listener has SO_REUSEPORT).
UniqueFd listen_any(int type, uint16_t& port, bool exact = false) {
  UniqueFd s(::socket(AF_INET, type | SOCK_CLOEXEC, 0));
  if (!s) throw_sys("socket");
  int one = 1;
  ::setsockopt(s.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  ::setsockopt(s.get(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  if (::bind(s.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    if (exact) throw_sys("bind port " + std::to_string(port) + " of the netd taken over from");
    sa.sin_port = 0;
    if (::bind(s.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) throw_sys("bind");
  }
  if (type == SOCK_STREAM && ::listen(s.get(), 1024) != 0) throw_sys("listen");
  socklen_t len = sizeof sa;
  ::getsockname(s.get(), reinterpret_cast<sockaddr*>(&sa), &len);
  port = ntohs(sa.sin_port);
  return s;
}

}  // namespace

Ports ensure_running(const std::string& exe) {
  make_dirs(run_dir(), 0700);
  auto running = read_running();
  if (running && serves_us(*running, exe)) return running->ports;
  // A netd from before hand-overs existed cannot hand over: it is replaced, as it used to be.
  if (running && running->protocol < 2) {
    ::kill(running->ports.pid, SIGTERM);
    for (int i = 0; i < 200 && lock_held(run_dir() + "/netd.lock"); i++)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    running.reset();
  }
  pid_t child = ::fork();
  if (child < 0) throw_sys("fork netd");
  if (child == 0) {
    ::setsid();
    if (::fork() != 0) ::_exit(0);
    int null = ::open("/dev/null", O_RDWR);
    int log = ::open((run_dir() + "/netd.log").c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
    ::dup2(null, 0);
    ::dup2(log >= 0 ? log : null, 1);
    ::dup2(log >= 0 ? log : null, 2);
    ::syscall(SYS_close_range, 3, ~0u, 0);
    const char* plain[] = {"upstream", "netd", nullptr};
    const char* take[] = {"upstream", "netd", "--take-over", nullptr};
    ::execv(exe.c_str(), const_cast<char**>(running ? take : plain));
    ::_exit(127);
  }
  int status;
  ::waitpid(child, &status, 0);
  for (int i = 0; i < 2000; i++) {
    if (auto p = read_ports(exe)) return *p;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  throw Error(Errc::unavailable,
              "the network daemon (upstream netd) did not start; see " + run_dir() + "/netd.log");
}

json read_stats(const std::string& path) {
  BoxStats s;
  if (auto text = try_read_file(path)) try {
      s = stats_from_json(json::parse(*text));
    } catch (const std::exception&) {
    }
  return stats_json(s);
}

namespace {

std::string handover_path(const std::string& dir) { return dir + "/netd.handover"; }

// The hand-over socket: a successor connects and asks; it gets the resolver's socket, and this
// netd retires.
void serve_handover(const std::string& dir, std::shared_ptr<UniqueFd> resolver,
                    std::function<void()> retire) {
  std::string path = handover_path(dir);
  UniqueFd l(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path.c_str());
  ::unlink(path.c_str());
  if (!l || ::bind(l.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 ||
      ::listen(l.get(), 4) != 0) {
    std::fprintf(stderr, "netd: no hand-over socket at %s: %s\n", path.c_str(),
                 std::strerror(errno));
    return;
  }
  ::chmod(path.c_str(), 0600);
  std::thread([l = std::move(l), resolver, retire] {
    while (true) {
      UniqueFd c(::accept4(l.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (!c) continue;
      try {
        auto m = ipc::recv_wait(c.get(), 5000);
        if (!m || m->body.value("op", "") != "hand-over") continue;
        ipc::send(c.get(), {{"ok", true}}, {resolver->get()});
        retire();
        return;
      } catch (const std::exception& e) {
        std::fprintf(stderr, "netd: hand-over: %s\n", e.what());
      }
    }
  }).detach();
}

// The predecessor's resolver socket, asked for over its hand-over socket (which retires it);
// empty if it has none (it is then told by SIGUSR2).
UniqueFd receive_resolver(const std::string& dir) {
  try {
    UniqueFd c = ipc::connect(handover_path(dir));
    ipc::send(c.get(), {{"op", "hand-over"}});
    auto m = ipc::recv_wait(c.get(), 5000);
    if (m && m->body.value("ok", false) && m->fds.size() == 1) return std::move(m->fds[0]);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "netd: no hand-over from the running netd (%s)\n", e.what());
  }
  return UniqueFd();
}

}  // namespace

int serve(const std::string& dir, bool take_over) {
  make_dirs(dir, 0700);
  // SIGUSR2 (from a successor) is taken by a thread of its own.
  sigset_t usr2;
  sigemptyset(&usr2);
  sigaddset(&usr2, SIGUSR2);
  pthread_sigmask(SIG_BLOCK, &usr2, nullptr);
  std::optional<FileLock> lock = FileLock::try_lock(dir + "/netd.lock");
  std::optional<Running> predecessor;
  if (!lock) {
    predecessor = read_running();
    // One runs already; only a newer successor takes over.
    if (!take_over || !predecessor || serves_us(*predecessor, self_exe())) return 0;
  }
  ::signal(SIGPIPE, SIG_IGN);
  // Connections queued on a listener that closes move to another listener of its port (the
  // successor's), instead of being reset.
  if (UniqueFd f(::open("/proc/sys/net/ipv4/tcp_migrate_req", O_WRONLY | O_CLOEXEC)); f)
    (void)!::write(f.get(), "1\n", 2);
  Ports ports;
  if (auto text = try_read_file(dir + "/netd.json")) try {
      json j = json::parse(*text);
      ports.proxy = j.value("proxy", uint16_t{0});
      ports.dns = j.value("dns", uint16_t{0});
    } catch (const std::exception&) {
    }
  UniqueFd proxy = listen_any(SOCK_STREAM, ports.proxy, predecessor.has_value());
  // The resolver's socket itself comes from the predecessor (a datagram queued on it is answered
  // by whichever netd reads it); TCP listeners share their ports instead.
  std::shared_ptr<UniqueFd> resolver;
  bool handed = false;
  if (predecessor) {
    if (UniqueFd dns = receive_resolver(dir)) {
      resolver = std::make_shared<UniqueFd>(std::move(dns));
      handed = true;
    }
  }
  if (!resolver)
    resolver =
        std::make_shared<UniqueFd>(listen_any(SOCK_DGRAM, ports.dns, predecessor.has_value()));
  auto announce = [&] {
    write_file_atomic(dir + "/netd.json",
                      json{{"pid", ::getpid()},
                           {"proxy", ports.proxy},
                           {"dns", ports.dns},
                           {"protocol", protocol()},
                           {"built", built_ns(self_exe())}}
                          .dump(),
                      0600);
  };
  if (!predecessor) announce();
  std::thread([] {
    while (!retired) {
      std::this_thread::sleep_for(std::chrono::milliseconds(250));
      counters.flush();
    }
  }).detach();
  std::thread(manage_exposures).detach();
  std::thread([resolver] {
    char buf[4096];
    int fd = resolver->get();
    while (!retired) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) continue;
      sockaddr_in peer{};
      socklen_t len = sizeof peer;
      ssize_t n =
          ::recvfrom(fd, buf, sizeof buf, MSG_DONTWAIT, reinterpret_cast<sockaddr*>(&peer), &len);
      if (n <= 0 || active.load() > kMaxActive) continue;
      active++;
      // The socket lives while answers are being sent from it (after a hand-over too).
      std::thread([resolver, msg = std::string(buf, static_cast<size_t>(n)), peer] {
        try {
          answer_query(resolver->get(), msg, peer);
        } catch (const std::exception& e) {
          std::fprintf(stderr, "netd: DNS query: %s\n", e.what());
        }
        active--;
      }).detach();
    }
  }).detach();
  resolver.reset();
  // Retiring: stop listening (the successor has bound the same ports, or holds the resolver's
  // socket), give up the lock, serve what is under way (for at most 10 minutes), then leave.
  // Asked by a successor over the hand-over socket, or by SIGUSR2.
  std::once_flag retire_once;
  auto retire = [&lock, proxy_fd = proxy.get(), &retire_once] {
    std::call_once(retire_once, [&] {
      retired = true;
      counters.flush();
      ::shutdown(proxy_fd, SHUT_RDWR);
      lock.reset();
      std::fprintf(stderr, "netd %d: handed over to a newer netd; finishing %d connections\n",
                   ::getpid(), active.load());
      std::thread([] {
        for (int i = 0; i < 6000 && active.load() > 0; i++)
          std::this_thread::sleep_for(std::chrono::milliseconds(100));
        counters.flush();
        ::_exit(0);
      }).detach();
    });
  };
  std::thread([retire] {
    int sig = 0;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR2);
    while (sigwait(&set, &sig) != 0) {
    }
    retire();
  }).detach();
  if (!predecessor) serve_handover(dir, resolver, retire);
  if (predecessor) {
    // Both serve now; the predecessor stops listening and hands over the lock (told already if it
    // handed over the resolver's socket).
    if (!handed) ::kill(predecessor->ports.pid, SIGUSR2);
    lock.emplace(dir + "/netd.lock", 30'000);
    serve_handover(dir, resolver, retire);
    announce();
    std::fprintf(stderr, "netd %d: took over from netd %d (protocol %d)\n", ::getpid(),
                 predecessor->ports.pid, predecessor->protocol);
  }
  while (true) {
    int c = ::accept4(proxy.get(), nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) {
      if (retired) pause();  // the retiring thread ends the process
      if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE) continue;
      throw_sys("accept");
    }
    if (active.load() > kMaxActive) {
      ::close(c);
      continue;
    }
    active++;
    no_delay(c);
    std::thread([c] {
      try {
        handle(UniqueFd(c));
      } catch (const std::exception& e) {
        std::fprintf(stderr, "netd: proxied connection: %s\n", e.what());
      }
      active--;
    }).detach();
  }
}

}  // namespace upstream::netd
