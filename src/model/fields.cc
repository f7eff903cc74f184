#include "model/fields.h"

#include <set>

#include "common/error.h"
#include "common/strings.h"

namespace upstream {

using nlohmann::json;

Fields::Fields(const json& j, std::string where, std::initializer_list<const char*> known)
    : Fields(j, std::move(where), std::vector<std::string>(known.begin(), known.end())) {}

Fields::Fields(const json& j, std::string where, const std::vector<std::string>& known)
    : j_(j), where_(std::move(where)) {
  if (!j_.is_object())
    throw_invalid(where_.empty() ? "the JSON body must be an object"
                                 : "field '" + where_ + "' must be an object");
  std::set<std::string> ok(known.begin(), known.end());
  for (const auto& [k, v] : j_.items())
    if (!ok.count(k))
      throw_invalid("unknown field '" + (where_.empty() ? k : where_ + "." + k) +
                    "' (known: " + join(known, ", ") + ")");
}

std::string Fields::name(const char* key) const {
  return where_.empty() ? std::string(key) : where_ + "." + key;
}

void Fields::fail(const char* key, const std::string& what) const {
  throw_invalid("field '" + name(key) + "' " + what);
}

const json* Fields::get(const char* key) const {
  auto it = j_.find(key);
  return it == j_.end() || it->is_null() ? nullptr : &*it;
}

std::optional<std::string> Fields::str(const char* key) const {
  const json* v = get(key);
  if (!v) return std::nullopt;
  if (!v->is_string()) fail(key, "must be a string");
  return v->get<std::string>();
}

std::optional<bool> Fields::boolean(const char* key) const {
  const json* v = get(key);
  if (!v) return std::nullopt;
  if (!v->is_boolean()) fail(key, "must be true or false");
  return v->get<bool>();
}

std::optional<uint64_t> Fields::uint(const char* key) const {
  const json* v = get(key);
  if (!v) return std::nullopt;
  if (!v->is_number_integer() || v->get<int64_t>() < 0) fail(key, "must be a whole number >= 0");
  return v->get<uint64_t>();
}

std::optional<int64_t> Fields::integer(const char* key) const {
  const json* v = get(key);
  if (!v) return std::nullopt;
  if (!v->is_number_integer()) fail(key, "must be a whole number");
  return v->get<int64_t>();
}

std::map<std::string, std::string> Fields::string_map(const char* key) const {
  std::map<std::string, std::string> out;
  const json* v = get(key);
  if (!v) return out;
  if (!v->is_object()) fail(key, "must be an object of strings");
  for (const auto& [k, x] : v->items()) {
    if (!x.is_string()) throw_invalid("field '" + name(key) + "." + k + "' must be a string");
    out[k] = x.get<std::string>();
  }
  return out;
}

std::vector<std::string> Fields::string_list(const char* key) const {
  std::vector<std::string> out;
  const json* v = get(key);
  if (!v) return out;
  if (!v->is_array()) fail(key, "must be an array of strings");
  for (const auto& x : *v) {
    if (!x.is_string()) fail(key, "must be an array of strings");
    out.push_back(x.get<std::string>());
  }
  return out;
}

}  // namespace upstream
