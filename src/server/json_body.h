// Reading JSON request bodies: an object whose fields are all known and of the right type, with
// errors that name the field (a 400 with code invalid_argument).
#pragma once

#include <initializer_list>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/strings.h"
#include "server/api.h"

namespace upstream::server {

[[noreturn]] inline void bad(const std::string& message) {
  throw ApiError(400, "invalid_argument", message);
}

inline std::string dump(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// A JSON request body: an object whose fields are all known and of the right type.
class Body {
 public:
  Body(const std::string& text, std::initializer_list<const char*> allowed) {
    if (text.empty()) {
      j_ = nlohmann::json::object();
      return;
    }
    try {
      j_ = nlohmann::json::parse(text);
    } catch (const nlohmann::json::parse_error& e) {
      // "[json.exception.parse_error.101] parse error at line 1, column 5: ..." -> the tail.
      std::string what = e.what();
      auto p = what.find("parse error");
      bad("malformed JSON body: " + (p == std::string::npos ? what : what.substr(p)));
    }
    if (!j_.is_object()) bad("the JSON body must be an object");
    std::set<std::string> ok(allowed.begin(), allowed.end());
    for (const auto& [k, v] : j_.items())
      if (!ok.count(k))
        bad("unknown field '" + k + "' (known: " + join({allowed.begin(), allowed.end()}, ", ") +
            ")");
  }
  const nlohmann::json* get(const char* key) const {
    auto it = j_.find(key);
    return it == j_.end() || it->is_null() ? nullptr : &*it;
  }
  std::optional<std::string> str(const char* key) const {
    const nlohmann::json* v = get(key);
    if (!v) return std::nullopt;
    if (!v->is_string()) bad(std::string("field '") + key + "' must be a string");
    return v->get<std::string>();
  }
  std::optional<bool> boolean(const char* key) const {
    const nlohmann::json* v = get(key);
    if (!v) return std::nullopt;
    if (!v->is_boolean()) bad(std::string("field '") + key + "' must be true or false");
    return v->get<bool>();
  }
  std::optional<uint64_t> uint(const char* key) const {
    const nlohmann::json* v = get(key);
    if (!v) return std::nullopt;
    if (!v->is_number_unsigned())
      bad(std::string("field '") + key + "' must be a whole number >= 0");
    return v->get<uint64_t>();
  }
  std::map<std::string, std::string> string_map(const char* key) const {
    std::map<std::string, std::string> out;
    const nlohmann::json* v = get(key);
    if (!v) return out;
    if (!v->is_object()) bad(std::string("field '") + key + "' must be an object of strings");
    for (const auto& [k, x] : v->items()) {
      if (!x.is_string()) bad(std::string("field '") + key + "." + k + "' must be a string");
      out[k] = x.get<std::string>();
    }
    return out;
  }
  std::vector<std::string> string_list(const char* key) const {
    std::vector<std::string> out;
    const nlohmann::json* v = get(key);
    if (!v) return out;
    if (!v->is_array()) bad(std::string("field '") + key + "' must be an array of strings");
    for (const auto& x : *v) {
      if (!x.is_string()) bad(std::string("field '") + key + "' must be an array of strings");
      out.push_back(x.get<std::string>());
    }
    return out;
  }

 private:
  nlohmann::json j_;
};

}  // namespace upstream::server
