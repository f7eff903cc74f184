#include "server/request_guard.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cctype>

#include "common/strings.h"

namespace upstream::server {

namespace {

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// The name or address of a Host value ("Example.com:8420" -> "example.com", "[::1]:1" -> "::1").
std::optional<std::string> host_part(const std::string& value) {
  std::string h = lower(trim(value));
  if (h.empty()) return h;
  if (h[0] == '[') {
    auto close = h.find(']');
    if (close == std::string::npos) return std::nullopt;
    std::string rest = h.substr(close + 1);
    if (!rest.empty() && rest[0] != ':') return std::nullopt;
    return h.substr(1, close - 1);
  }
  auto colon = h.find(':');
  if (colon != std::string::npos) {
    if (h.find(':', colon + 1) != std::string::npos) return h;  // a bare IPv6 address
    std::string port = h.substr(colon + 1);
    if (port.empty() || port.size() > 5 ||
        port.find_first_not_of("0123456789") != std::string::npos)
      return std::nullopt;
    h = h.substr(0, colon);
  }
  while (!h.empty() && h.back() == '.') h.pop_back();
  return h;
}

bool is_ip_literal(const std::string& h) {
  unsigned char buf[16];
  return ::inet_pton(AF_INET, h.c_str(), buf) == 1 || ::inet_pton(AF_INET6, h.c_str(), buf) == 1;
}

bool name_matches(const std::string& name, const std::string& pattern) {
  std::string p = lower(pattern);
  if (starts_with(p, "*.")) return name.size() > p.size() - 1 && name.ends_with(p.substr(1));
  return name == p;
}

bool safelisted_type(const std::string& media) {
  // What a page may send to another site without a preflight (the Fetch standard's list).
  return media == "text/plain" || media == "application/x-www-form-urlencoded" ||
         media == "multipart/form-data";
}

}  // namespace

bool host_allowed(const std::string& host, const GuardOptions& o) {
  auto h = host_part(host);
  if (!h) return false;
  // No Host (HTTP/1.0 clients): no browser sends such a request.
  if (h->empty()) return true;
  // An address cannot be rebound to another one, and browsers resolve localhost themselves.
  if (is_ip_literal(*h) || *h == "localhost" || h->ends_with(".localhost")) return true;
  return std::any_of(o.host_names.begin(), o.host_names.end(),
                     [&](const std::string& p) { return name_matches(*h, p); });
}

std::optional<GuardRefusal> guard_request(const GuardedRequest& r, const GuardOptions& o) {
  if (!r.local_socket && !host_allowed(r.host, o))
    return GuardRefusal{421, "misdirected_request",
                        "this server does not answer to the name '" + r.host +
                            "' (it answers to its addresses, localhost and the names given "
                            "with --host-name)"};
  if (r.origin) {
    std::string origin = lower(trim(*r.origin));
    while (!origin.empty() && origin.back() == '/') origin.pop_back();
    bool allowed =
        std::any_of(o.allowed_origins.begin(), o.allowed_origins.end(), [&](std::string a) {
          a = lower(trim(a));
          while (!a.empty() && a.back() == '/') a.pop_back();
          return a == origin;
        });
    if (!allowed) {
      // The server's own pages: the Origin's authority is the Host the request was sent to.
      auto sep = origin.find("://");
      std::string scheme = sep == std::string::npos ? "" : origin.substr(0, sep);
      std::string authority = sep == std::string::npos ? "" : origin.substr(sep + 3);
      allowed = (scheme == "http" || scheme == "https") && !authority.empty() &&
                authority == lower(trim(r.host)) && host_allowed(authority, o);
    }
    if (!allowed)
      return GuardRefusal{403, "cross_origin",
                          "requests from other sites' pages are refused (Origin " + *r.origin +
                              "); allow an origin with --allow-origin"};
  }
  if (r.has_body) {
    std::string media = lower(trim(r.content_type.substr(0, r.content_type.find(';'))));
    if (!r.raw_body && media != "application/json" && !media.ends_with("+json"))
      return GuardRefusal{
          415, "unsupported_media_type",
          "the request body must be JSON, sent with Content-Type: "
          "application/json" +
              (media.empty() ? std::string(" (none was given)") : " (not " + media + ")")};
    if (r.raw_body && r.method == "POST" && (media.empty() || safelisted_type(media)))
      return GuardRefusal{
          415, "unsupported_media_type",
          "this route takes raw bytes: send them with Content-Type: "
          "application/octet-stream" +
              (media.empty() ? std::string(" (none was given)") : " (not " + media + ")")};
  }
  return std::nullopt;
}

}  // namespace upstream::server
