// Reading JSON objects strictly: every key known, every value of the right type, each error
// naming the field as a user wrote it ("limits.memory") and thrown as Error(invalid_argument).
// The decoders of model/ are built on it, so a request body, a stored record and a configuration
// file are read by the same code with the same messages.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace upstream {

class Fields {
 public:
  // `where` is the object's own name ("" for a whole body, "limits" for a nested object).
  Fields(const nlohmann::json& j, std::string where, std::initializer_list<const char*> known);
  Fields(const nlohmann::json& j, std::string where, const std::vector<std::string>& known);

  // The value of a key, or nullptr when it is absent or null.
  const nlohmann::json* get(const char* key) const;
  std::optional<std::string> str(const char* key) const;
  std::optional<bool> boolean(const char* key) const;
  std::optional<uint64_t> uint(const char* key) const;
  std::optional<int64_t> integer(const char* key) const;
  std::map<std::string, std::string> string_map(const char* key) const;
  std::vector<std::string> string_list(const char* key) const;
  // "where.key" (or "key" at the top), for messages.
  std::string name(const char* key) const;
  [[noreturn]] void fail(const char* key, const std::string& what) const;

 private:
  const nlohmann::json& j_;
  std::string where_;
};

}  // namespace upstream
