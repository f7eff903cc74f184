#include "model/egress.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cctype>

#include "common/error.h"
#include "common/strings.h"

namespace upstream::egress {

using nlohmann::json;

const std::vector<std::string>& private_ranges() {
  static const std::vector<std::string> r = {"0.0.0.0/8",      "10.0.0.0/8",     "100.64.0.0/10",
                                             "127.0.0.0/8",    "169.254.0.0/16", "172.16.0.0/12",
                                             "192.168.0.0/16", "224.0.0.0/4",    "240.0.0.0/4"};
  return r;
}

std::optional<uint32_t> parse_ipv4(const std::string& text) {
  in_addr a{};
  if (::inet_pton(AF_INET, text.c_str(), &a) != 1) return std::nullopt;
  return ntohl(a.s_addr);
}

std::string ipv4_string(uint32_t ip) {
  in_addr a{htonl(ip)};
  char buf[INET_ADDRSTRLEN];
  ::inet_ntop(AF_INET, &a, buf, sizeof buf);
  return buf;
}

std::string parse_cidr(const std::string& text, const std::string& what) {
  std::string addr = text;
  int prefix = 32;
  if (auto slash = text.find('/'); slash != std::string::npos) {
    addr = text.substr(0, slash);
    std::string p = text.substr(slash + 1);
    if (p.empty() || p.size() > 2 || p.find_first_not_of("0123456789") != std::string::npos ||
        std::stoi(p) > 32)
      throw_invalid("invalid " + what + " '" + text + "': the prefix must be 0 to 32");
    prefix = std::stoi(p);
  }
  in_addr a{};
  if (::inet_pton(AF_INET, addr.c_str(), &a) != 1)
    throw_invalid("invalid " + what + " '" + text +
                  "': not an IPv4 address or CIDR such as 10.1.0.0/16");
  uint32_t host = ntohl(a.s_addr);
  uint32_t mask = prefix == 0 ? 0 : ~uint32_t{0} << (32 - prefix);
  return ipv4_string(host & mask) + "/" + std::to_string(prefix);
}

NetAddrs net_addrs(uint32_t slot) {
  if (slot >= kMaxNetSlots)
    throw Error(Errc::unavailable, "no network address left: the box network pool " +
                                       std::string(kBoxNetPool) + " holds " +
                                       std::to_string(kMaxNetSlots) + " boxes with a network");
  NetAddrs a;
  a.host_if = "upv" + std::to_string(slot);
  uint32_t net = cidr(kBoxNetPool).net + slot * 4;
  a.host_ip = ipv4_string(net + 1);
  a.box_ip = ipv4_string(net + 2);
  return a;
}

Cidr cidr(const std::string& normalised) {
  auto slash = normalised.find('/');
  Cidr c;
  c.text = normalised;
  auto ip = parse_ipv4(normalised.substr(0, slash));
  if (!ip) throw_invalid("invalid CIDR '" + normalised + "'");
  int prefix = slash == std::string::npos ? 32 : std::stoi(normalised.substr(slash + 1));
  c.mask = prefix == 0 ? 0 : ~uint32_t{0} << (32 - prefix);
  c.net = *ip & c.mask;
  return c;
}

std::string normalise_host(std::string host) {
  if (!host.empty() && host[0] == '[') {
    // An IPv6 literal (never a policy name), with or without a port; anything else is no host.
    size_t close = host.find(']');
    if (close == std::string::npos || close == 1 ||
        host.find_first_not_of("0123456789abcdefABCDEF:.", 1) != close)
      return "";
    std::string rest = host.substr(close + 1);
    if (!rest.empty() &&
        (rest[0] != ':' || rest.find_first_not_of("0123456789", 1) != std::string::npos))
      return "";
    host.resize(close + 1);
    std::transform(host.begin(), host.end(), host.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return host;
  }
  auto cut_dots = [&] {
    while (!host.empty() && host.back() == '.') host.pop_back();
  };
  cut_dots();
  if (auto colon = host.find(':'); colon != std::string::npos) {
    // Only a port is cut (digits after the only colon).
    if (colon != host.rfind(':') ||
        host.find_first_not_of("0123456789", colon + 1) != std::string::npos)
      return "";
    host.resize(colon);
    cut_dots();
  }
  for (auto& c : host) {
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    // What is not a host name is no host (the connection is then judged by its address).
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-' && c != '_') return "";
  }
  return host;
}

std::string parse_domain_pattern(const std::string& text, const std::string& what) {
  std::string s = text;
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  std::string name = starts_with(s, "*.") ? s.substr(2) : s;
  if (!name.empty() && name.back() == '.') name.pop_back();
  auto bad = [&](const std::string& why) {
    throw_invalid("invalid " + what + " '" + text + "': " + why +
                  " (use a name such as api.example.com, or *.example.com for every name below "
                  "example.com)");
  };
  if (name.empty()) bad("no name");
  if (name.size() > 253) bad("longer than 253 characters");
  if (parse_ipv4(name)) bad("an address, not a name: put addresses in the allowed CIDRs");
  for (const auto& label : split(name, '.')) {
    if (label.empty()) bad("empty label");
    if (label.size() > 63) bad("a label is longer than 63 characters");
    for (char c : label)
      if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_'))
        bad(std::string("'") + c + "' is not allowed in a name");
    if (label.front() == '-' || label.back() == '-') bad("a label starts or ends with '-'");
  }
  if (name.find('.') == std::string::npos && starts_with(s, "*.")) bad("a wildcard over a TLD");
  return (starts_with(s, "*.") ? "*." : "") + name;
}

bool domain_matches(const std::string& pattern, const std::string& host) {
  if (starts_with(pattern, "*.")) {
    std::string_view suffix = std::string_view(pattern).substr(1);  // ".example.com"
    return host.size() > suffix.size() &&
           std::string_view(host).substr(host.size() - suffix.size()) == suffix;
  }
  return pattern == host;
}

void check_header(const std::string& name, const std::string& value) {
  const std::string tchar = "!#$%&'*+-.^_`|~";
  bool ok = !name.empty() && name.size() <= 256;
  for (char c : name)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || tchar.find(c) != std::string::npos))
      ok = false;
  if (!ok)
    throw_invalid("invalid header name '" + name +
                  "': use letters, digits and !#$%&'*+-.^_`|~ (e.g. Authorization)");
  std::string lower = name;
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  for (const char* hop : {"host", "content-length", "transfer-encoding", "connection", "upgrade"})
    if (lower == hop) throw_invalid("header '" + name + "' cannot be injected: the proxy sets it");
  if (value.size() > 16384) throw_invalid("the value of header '" + name + "' is too long");
  for (char c : value)
    if (c == '\r' || c == '\n' || c == '\0')
      throw_invalid("the value of header '" + name + "' holds a line break or NUL byte");
}

void validate(NetworkMode mode, Egress& e) {
  bool lists = !e.allow_domains.empty() || !e.allow_cidrs.empty() || !e.deny_cidrs.empty();
  if (lists && mode != NetworkMode::custom)
    throw_invalid("allowed domains and allowed or denied CIDRs apply to network mode custom, not " +
                  to_string(mode));
  if (!e.headers.empty() && mode == NetworkMode::none)
    throw_invalid("headers need a network: use network mode allow-all or custom");
  for (auto& d : e.allow_domains) d = parse_domain_pattern(d, "allowed domain");
  for (auto& c : e.allow_cidrs) c = parse_cidr(c, "allowed CIDR");
  for (auto& c : e.deny_cidrs) c = parse_cidr(c, "denied CIDR");
  std::map<std::string, std::map<std::string, std::string>> headers;
  for (const auto& [pattern, hs] : e.headers) {
    std::string p = parse_domain_pattern(pattern, "header host pattern");
    if (hs.empty()) throw_invalid("no headers given for host pattern '" + pattern + "'");
    for (const auto& [name, value] : hs) check_header(name, value);
    headers[p] = hs;
  }
  e.headers = std::move(headers);
}

json to_json(const Egress& e, bool values) {
  json h = json::object();
  for (const auto& [pattern, hs] : e.headers) {
    if (values) {
      h[pattern] = hs;
    } else {
      json names = json::array();
      for (const auto& [name, v] : hs) names.push_back(name);
      h[pattern] = names;
    }
  }
  return {{"allow_domains", e.allow_domains},
          {"allow_cidrs", e.allow_cidrs},
          {"deny_cidrs", e.deny_cidrs},
          {"headers", h}};
}

namespace {

std::vector<std::string> string_list(const json& j, const char* field) {
  if (!j.contains(field) || j[field].is_null()) return {};
  if (!j[field].is_array()) throw_invalid(std::string(field) + " must be a list of strings");
  std::vector<std::string> out;
  for (const auto& v : j[field]) {
    if (!v.is_string()) throw_invalid(std::string(field) + " must be a list of strings");
    out.push_back(v.get<std::string>());
  }
  return out;
}

}  // namespace

Egress from_json(const json& j) {
  if (!j.is_object()) throw_invalid("egress must be an object");
  for (const auto& [k, v] : j.items())
    if (k != "allow_domains" && k != "allow_cidrs" && k != "deny_cidrs" && k != "headers")
      throw_invalid("unknown egress field '" + k +
                    "' (known: allow_domains, allow_cidrs, deny_cidrs, headers)");
  Egress e;
  e.allow_domains = string_list(j, "allow_domains");
  e.allow_cidrs = string_list(j, "allow_cidrs");
  e.deny_cidrs = string_list(j, "deny_cidrs");
  if (j.contains("headers") && !j["headers"].is_null()) {
    const json& h = j["headers"];
    if (!h.is_object())
      throw_invalid("headers must map host patterns to objects of header names and values");
    for (const auto& [pattern, hs] : h.items()) {
      if (!hs.is_object())
        throw_invalid("headers['" + pattern + "'] must be an object of header names and values");
      for (const auto& [name, value] : hs.items()) {
        if (!value.is_string())
          throw_invalid("headers['" + pattern + "']['" + name + "'] must be a string");
        e.headers[pattern][name] = value.get<std::string>();
      }
    }
  }
  return e;
}

json exposure_to_json(const Exposure& e) {
  return {{"id", e.id},
          {"port", e.port},
          {"host_port", e.host_port},
          {"address", e.address},
          {"auth", e.auth},
          {"username", e.username},
          {"hash", e.hash},
          {"created_at", e.created_at}};
}

Exposure exposure_from_json(const json& j) {
  Exposure e;
  e.id = j.at("id").get<std::string>();
  e.port = j.at("port").get<uint16_t>();
  e.host_port = j.at("host_port").get<uint16_t>();
  e.address = j.value("address", "127.0.0.1");
  e.auth = j.at("auth").get<std::string>();
  e.username = j.value("username", "");
  e.hash = j.at("hash").get<std::string>();
  e.created_at = j.value("created_at", int64_t{0});
  return e;
}

json policy_to_json(const BoxPolicy& p) {
  json ex = json::array();
  for (const auto& e : p.exposures) ex.push_back(exposure_to_json(e));
  return {{"box_id", p.box_id},
          {"box_name", p.box_name},
          {"box_ip", p.box_ip},
          {"init_pid", p.init_pid},
          {"init_start", p.init_start},
          {"mode", to_string(p.mode)},
          {"egress", to_json(p.egress, true)},
          {"open_private", p.open_private},
          {"resolvers", p.resolvers},
          {"ca_cert", p.ca_cert},
          {"ca_key", p.ca_key},
          {"stats_path", p.stats_path},
          {"trust_file", p.trust_file},
          {"exposures", ex}};
}

BoxPolicy policy_from_json(const json& j) {
  BoxPolicy p;
  p.box_id = j.at("box_id").get<std::string>();
  p.box_name = j.value("box_name", "");
  p.box_ip = j.at("box_ip").get<std::string>();
  p.init_pid = j.value("init_pid", 0);
  p.init_start = j.value("init_start", uint64_t{0});
  p.mode = parse_network_mode(j.at("mode").get<std::string>());
  p.egress = from_json(j.at("egress"));
  p.open_private = j.value("open_private", std::vector<std::string>{});
  p.resolvers = j.value("resolvers", std::vector<std::string>{});
  p.ca_cert = j.value("ca_cert", "");
  p.ca_key = j.value("ca_key", "");
  p.stats_path = j.value("stats_path", "");
  p.trust_file = j.value("trust_file", "");
  if (j.contains("exposures"))
    for (const auto& e : j["exposures"]) p.exposures.push_back(exposure_from_json(e));
  return p;
}

std::optional<std::string> address_blocked(const BoxPolicy& p, uint32_t ip,
                                           const std::vector<uint32_t>& host_addrs, bool named) {
  std::string addr = ipv4_string(ip);
  for (const auto& c : p.egress.deny_cidrs)
    if (cidr(c).contains(ip)) return addr + " is in the denied CIDR " + c;
  if (cidr(kBoxNetPool).contains(ip)) return addr + " is another box";
  if (std::find(host_addrs.begin(), host_addrs.end(), ip) != host_addrs.end())
    return addr + " is the host itself";
  bool opened = false;
  for (const auto& c : p.open_private)
    if (cidr(c).contains(ip)) opened = true;
  if (!opened)
    for (const auto& c : private_ranges())
      if (cidr(c).contains(ip)) return addr + " is in the private range " + c;
  if (p.mode == NetworkMode::custom && !named) {
    for (const auto& c : p.egress.allow_cidrs)
      if (cidr(c).contains(ip)) return std::nullopt;
    return addr + " is not in the allowed CIDRs";
  }
  return std::nullopt;
}

bool proxied(NetworkMode mode, const Egress& e) {
  return mode == NetworkMode::custom || (mode != NetworkMode::none && !e.headers.empty());
}

bool name_allowed(const BoxPolicy& p, const std::string& host) {
  if (p.mode != NetworkMode::custom) return true;
  for (const auto& d : p.egress.allow_domains)
    if (domain_matches(d, host)) return true;
  return false;
}

std::vector<std::pair<std::string, std::string>> headers_for(const BoxPolicy& p,
                                                             const std::string& host) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& [pattern, hs] : p.egress.headers)
    if (domain_matches(pattern, host))
      for (const auto& h : hs) out.push_back(h);
  return out;
}

}  // namespace upstream::egress
