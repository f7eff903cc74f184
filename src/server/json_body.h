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
#include "model/fields.h"
#include "server/api.h"

namespace upstream::server {

[[noreturn]] inline void bad(const std::string& message) {
  throw ApiError(400, "invalid_argument", message);
}

inline std::string dump(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// A JSON request body: an object whose fields are all known and of the right type (read with
// model/fields.h, as every model decoder reads its objects).
class Body {
 public:
  Body(const std::string& text, std::initializer_list<const char*> allowed)
      : j_(parse(text)), f_(j_, "", allowed) {}
  const nlohmann::json& json() const { return j_; }
  const nlohmann::json* get(const char* key) const { return f_.get(key); }
  std::optional<std::string> str(const char* key) const { return f_.str(key); }
  std::optional<bool> boolean(const char* key) const { return f_.boolean(key); }
  std::optional<uint64_t> uint(const char* key) const { return f_.uint(key); }
  std::map<std::string, std::string> string_map(const char* key) const {
    return f_.string_map(key);
  }
  std::vector<std::string> string_list(const char* key) const { return f_.string_list(key); }

 private:
  static nlohmann::json parse(const std::string& text) {
    if (text.empty()) return nlohmann::json::object();
    try {
      return nlohmann::json::parse(text);
    } catch (const nlohmann::json::parse_error& e) {
      // "[json.exception.parse_error.101] parse error at line 1, column 5: ..." -> the tail.
      std::string what = e.what();
      auto p = what.find("parse error");
      bad("malformed JSON body: " + (p == std::string::npos ? what : what.substr(p)));
    }
  }
  nlohmann::json j_;
  Fields f_;
};

}  // namespace upstream::server
