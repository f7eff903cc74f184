#include "netd/dns.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <random>
#include <sstream>

#include "common/fd.h"
#include "common/time.h"

namespace upstream::dns {

namespace {

uint16_t u16(const std::string& m, size_t at) {
  return static_cast<uint16_t>((static_cast<uint8_t>(m[at]) << 8) |
                               static_cast<uint8_t>(m[at + 1]));
}
uint32_t u32(const std::string& m, size_t at) {
  return (static_cast<uint32_t>(u16(m, at)) << 16) | u16(m, at + 2);
}
void put16(std::string& m, uint16_t v) {
  m += static_cast<char>(v >> 8);
  m += static_cast<char>(v & 0xff);
}
void put32(std::string& m, uint32_t v) {
  put16(m, static_cast<uint16_t>(v >> 16));
  put16(m, static_cast<uint16_t>(v & 0xffff));
}

// Reads a (possibly compressed) name at `at`; returns the offset past it in the message, or
// nullopt when malformed.
std::optional<size_t> read_name(const std::string& m, size_t at, std::string* out,
                                bool compressed = true) {
  size_t end = 0;
  int jumps = 0;
  std::string name;
  while (true) {
    if (at >= m.size()) return std::nullopt;
    uint8_t len = static_cast<uint8_t>(m[at]);
    if ((len & 0xc0) == 0xc0) {
      if (!compressed || at + 1 >= m.size() || ++jumps > 16) return std::nullopt;
      if (!end) end = at + 2;
      at = ((len & 0x3f) << 8) | static_cast<uint8_t>(m[at + 1]);
      continue;
    }
    if (len & 0xc0) return std::nullopt;
    if (len == 0) {
      if (!end) end = at + 1;
      break;
    }
    if (at + 1 + len > m.size() || name.size() + len > 254) return std::nullopt;
    if (!name.empty()) name += '.';
    for (size_t i = 0; i < len; i++) {
      char c = m[at + 1 + i];
      if (c == '.') return std::nullopt;  // a dot inside a label would read as two labels
      name += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
    at += 1 + len;
  }
  if (out) *out = name;
  return end;
}

std::string encode_name(const std::string& name) {
  std::string out;
  size_t start = 0;
  while (start <= name.size()) {
    size_t dot = name.find('.', start);
    if (dot == std::string::npos) dot = name.size();
    size_t len = dot - start;
    if (len == 0 || len > 63) break;
    out += static_cast<char>(len);
    out += name.substr(start, len);
    start = dot + 1;
  }
  out += '\0';
  return out;
}

uint16_t random_id() {
  static thread_local std::mt19937 rng{std::random_device{}()};
  return static_cast<uint16_t>(rng());
}

// One UDP exchange with a resolver; empty on timeout or error.
std::string exchange(const std::string& server, const std::string& query, int timeout_ms) {
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(53);
  std::string host = server;
  if (auto colon = server.find(':'); colon != std::string::npos) {
    host = server.substr(0, colon);
    sa.sin_port = htons(static_cast<uint16_t>(std::stoi(server.substr(colon + 1))));
  }
  if (::inet_pton(AF_INET, host.c_str(), &sa.sin_addr) != 1) return "";
  UniqueFd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!s) return "";
  if (::connect(s.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) return "";
  if (::send(s.get(), query.data(), query.size(), 0) < 0) return "";
  int64_t deadline = mono_us() + int64_t{timeout_ms} * 1000;
  char buf[4096];
  while (true) {
    int left = static_cast<int>((deadline - mono_us()) / 1000);
    if (left <= 0) return "";
    pollfd p{s.get(), POLLIN, 0};
    if (::poll(&p, 1, left) <= 0) return "";
    ssize_t n = ::recv(s.get(), buf, sizeof buf, 0);
    if (n < 12) continue;
    std::string r(buf, static_cast<size_t>(n));
    if (u16(r, 0) == u16(query, 0)) return r;  // else a stray datagram: keep waiting
  }
}

}  // namespace

std::optional<Question> parse_query(const std::string& m) {
  if (m.size() < 12) return std::nullopt;
  Question q;
  q.id = u16(m, 0);
  q.flags = u16(m, 2);
  if (q.flags & 0x8000) return std::nullopt;              // a response
  if (((q.flags >> 11) & 0xf) != 0) return std::nullopt;  // not a standard query
  if (u16(m, 4) != 1) return std::nullopt;
  // A query's name is never compressed (it is the first name of the message): one that is would
  // name other bytes than those the answer echoes.
  auto end = read_name(m, 12, &q.name, false);
  if (!end || *end + 4 > m.size()) return std::nullopt;
  q.qtype = u16(m, *end);
  q.qclass = u16(m, *end + 2);
  q.end = *end + 4;
  return q;
}

std::string answer(const std::string& query, const Question& q, uint8_t rcode,
                   const std::vector<uint32_t>& addrs, uint32_t ttl) {
  std::string r;
  put16(r, q.id);
  // QR, the query's opcode and RD, RA; the rcode.
  put16(r, static_cast<uint16_t>(0x8000 | (q.flags & 0x7900) | 0x0080 | (rcode & 0xf)));
  put16(r, 1);
  put16(r, static_cast<uint16_t>(addrs.size()));
  put16(r, 0);
  put16(r, 0);
  r += query.substr(12, q.end - 12);
  for (uint32_t a : addrs) {
    put16(r, 0xc00c);  // the question's name
    put16(r, kTypeA);
    put16(r, 1);
    put32(r, ttl);
    put16(r, 4);
    put32(r, a);
  }
  return r;
}

std::string build_query(uint16_t id, const std::string& name, uint16_t qtype) {
  std::string m;
  put16(m, id);
  put16(m, 0x0100);  // RD
  put16(m, 1);
  put16(m, 0);
  put16(m, 0);
  put16(m, 0);
  m += encode_name(name);
  put16(m, qtype);
  put16(m, 1);
  return m;
}

std::optional<Result> parse_response(const std::string& m, uint16_t id) {
  if (m.size() < 12 || u16(m, 0) != id || !(u16(m, 2) & 0x8000)) return std::nullopt;
  Result r;
  r.rcode = static_cast<uint8_t>(u16(m, 2) & 0xf);
  uint16_t qd = u16(m, 4), an = u16(m, 6);
  size_t at = 12;
  for (uint16_t i = 0; i < qd; i++) {
    auto end = read_name(m, at, nullptr);
    if (!end || *end + 4 > m.size()) return std::nullopt;
    at = *end + 4;
  }
  bool first = true;
  for (uint16_t i = 0; i < an; i++) {
    auto end = read_name(m, at, nullptr);
    if (!end || *end + 10 > m.size()) return std::nullopt;
    uint16_t type = u16(m, *end), cls = u16(m, *end + 2);
    uint32_t ttl = u32(m, *end + 4);
    uint16_t len = u16(m, *end + 8);
    size_t data = *end + 10;
    if (data + len > m.size()) return std::nullopt;
    if (type == kTypeA && cls == 1 && len == 4) {
      r.addrs.push_back(u32(m, data));
      r.ttl = first ? ttl : std::min(r.ttl, ttl);
      first = false;
    }
    at = data + len;
  }
  return r;
}

std::vector<std::string> resolv_conf_servers(const std::string& path) {
  std::ifstream f(path);
  std::vector<std::string> out;
  std::string line;
  while (std::getline(f, line)) {
    std::istringstream in(line);
    std::string word, addr;
    in >> word >> addr;
    in_addr a{};
    if (word == "nameserver" && ::inet_pton(AF_INET, addr.c_str(), &a) == 1) out.push_back(addr);
  }
  return out;
}

Result resolve_a(const std::vector<std::string>& resolvers, const std::string& name,
                 int timeout_ms) {
  for (const auto& server : resolvers) {
    uint16_t id = random_id();
    std::string resp = exchange(server, build_query(id, name, kTypeA), timeout_ms);
    if (resp.empty()) continue;
    if (auto r = parse_response(resp, id); r && r->rcode != kServFail) return *r;
  }
  return Result{};
}

std::string forward(const std::vector<std::string>& resolvers, const std::string& query,
                    int timeout_ms) {
  for (const auto& server : resolvers)
    if (std::string r = exchange(server, query, timeout_ms); !r.empty()) return r;
  return "";
}

}  // namespace upstream::dns

namespace upstream::dns {

bool carries_blocked_address(const std::string& m, const std::function<bool(uint32_t)>& blocked) {
  if (m.size() < 12) return true;
  uint16_t qd = u16(m, 4);
  size_t records = size_t{u16(m, 6)} + u16(m, 8) + u16(m, 10);
  size_t at = 12;
  for (uint16_t i = 0; i < qd; i++) {
    auto end = read_name(m, at, nullptr);
    if (!end || *end + 4 > m.size()) return true;
    at = *end + 4;
  }
  // Every section: an additional A record is as usable as an answer.
  for (size_t i = 0; i < records; i++) {
    auto end = read_name(m, at, nullptr);
    if (!end || *end + 10 > m.size()) return true;
    uint16_t type = u16(m, *end), cls = u16(m, *end + 2), len = u16(m, *end + 8);
    size_t data = *end + 10;
    if (data + len > m.size()) return true;
    if (cls == 1 && type == kTypeA && (len != 4 || blocked(u32(m, data)))) return true;
    if (cls == 1 && (type == kTypeAAAA || type == kTypeSVCB || type == kTypeHTTPS)) return true;
    at = data + len;
  }
  return false;
}

}  // namespace upstream::dns
