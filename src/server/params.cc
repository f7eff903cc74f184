#include "server/params.h"

#include "server/json_body.h"

namespace upstream::server {

[[noreturn]] void not_found(const std::string& message) {
  throw ApiError(404, "not_found", message);
}

std::optional<std::string> qparam(const Request& r, const std::string& key) {
  auto it = r.query.find(key);
  if (it == r.query.end()) return std::nullopt;
  return it->second;
}

std::string need_param(const Request& r, const std::string& key) {
  auto v = qparam(r, key);
  if (!v || v->empty()) bad("query parameter '" + key + "' is required");
  return *v;
}

bool bool_param(const Request& r, const std::string& key, bool fallback) {
  auto v = qparam(r, key);
  if (!v) return fallback;
  if (*v == "true" || *v == "1" || v->empty()) return true;
  if (*v == "false" || *v == "0") return false;
  bad("query parameter '" + key + "' must be true or false, got '" + *v + "'");
}

uint64_t uint_param(const Request& r, const std::string& key, uint64_t fallback, uint64_t max) {
  auto v = qparam(r, key);
  if (!v) return fallback;
  if (v->empty() || v->size() > 12 || v->find_first_not_of("0123456789") != std::string::npos)
    bad("query parameter '" + key + "' must be a whole number, got '" + *v + "'");
  uint64_t n = std::stoull(*v);
  if (n > max) bad("query parameter '" + key + "' must be at most " + std::to_string(max));
  return n;
}

std::optional<uint32_t> mode_param(const Request& r) {
  auto v = qparam(r, "mode");
  if (!v) return std::nullopt;
  if (v->empty() || v->size() > 4 || v->find_first_not_of("01234567") != std::string::npos)
    bad("query parameter 'mode' must be octal permission bits such as 0644, got '" + *v + "'");
  return static_cast<uint32_t>(std::stoul(*v, nullptr, 8));
}

}  // namespace upstream::server
