#include "common/strings.h"

#include <sys/random.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstring>

#include "common/error.h"

namespace upstream {

namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// Splits "1.5GiB" into the number 1.5 and the unit "gib". Returns false if there is no number.
bool split_number(std::string_view text, double& number, std::string& unit) {
  std::string t = trim(text);
  size_t i = 0;
  bool digits = false, dot = false;
  while (i < t.size()) {
    char c = t[i];
    if (std::isdigit(static_cast<unsigned char>(c))) {
      digits = true;
    } else if (c == '.' && !dot) {
      dot = true;
    } else {
      break;
    }
    i++;
  }
  if (!digits) return false;
  std::string num = t.substr(0, i);
  if (num.back() == '.') return false;
  errno = 0;
  char* end = nullptr;
  number = std::strtod(num.c_str(), &end);
  if (errno != 0 || end != num.c_str() + num.size() || !std::isfinite(number)) return false;
  unit = lower(trim(std::string_view(t).substr(i)));
  return true;
}

}  // namespace

uint64_t parse_size(std::string_view text, std::string_view what) {
  double number;
  std::string unit;
  auto bad = [&]() -> uint64_t {
    throw_invalid(std::string("invalid ") + std::string(what) + " '" + std::string(text) +
                  "': expected a number with an optional unit (k, m, g, t), e.g. 512m");
  };
  if (!split_number(text, number, unit)) bad();
  double mult;
  if (unit.empty() || unit == "b")
    mult = 1;
  else if (unit == "k" || unit == "kb" || unit == "kib")
    mult = 1024.0;
  else if (unit == "m" || unit == "mb" || unit == "mib")
    mult = 1024.0 * 1024;
  else if (unit == "g" || unit == "gb" || unit == "gib")
    mult = 1024.0 * 1024 * 1024;
  else if (unit == "t" || unit == "tb" || unit == "tib")
    mult = 1024.0 * 1024 * 1024 * 1024;
  else
    return bad();
  double bytes = number * mult;
  if (bytes >= 18446744073709551615.0)
    throw_invalid(std::string(what) + " '" + std::string(text) + "' is too large");
  if (mult == 1 && number != std::floor(number))
    throw_invalid(std::string("invalid ") + std::string(what) + " '" + std::string(text) +
                  "': a byte count must be whole");
  return static_cast<uint64_t>(std::llround(bytes));
}

uint64_t parse_duration_ms(std::string_view text, std::string_view what) {
  double number;
  std::string unit;
  auto bad = [&]() -> uint64_t {
    throw_invalid(std::string("invalid ") + std::string(what) + " '" + std::string(text) +
                  "': expected a number with an optional unit (ms, s, m, h), e.g. 30s");
  };
  if (!split_number(text, number, unit)) bad();
  double mult;
  if (unit == "ms")
    mult = 1;
  else if (unit.empty() || unit == "s" || unit == "sec")
    mult = 1000;
  else if (unit == "m" || unit == "min")
    mult = 60'000;
  else if (unit == "h")
    mult = 3'600'000;
  else
    return bad();
  double ms = number * mult;
  if (ms > 1e15) throw_invalid(std::string(what) + " '" + std::string(text) + "' is too large");
  return static_cast<uint64_t>(std::llround(ms));
}

uint64_t parse_cpus_milli(std::string_view text) {
  double number;
  std::string unit;
  if (!split_number(text, number, unit) || !unit.empty())
    throw_invalid("invalid CPU count '" + std::string(text) +
                  "': expected a number such as 1 or 0.5");
  uint64_t milli = static_cast<uint64_t>(std::llround(number * 1000));
  if (milli < 10)
    throw_invalid("CPU count '" + std::string(text) + "' is too small (minimum 0.01)");
  if (milli > 1'000'000) throw_invalid("CPU count '" + std::string(text) + "' is too large");
  return milli;
}

bool valid_env_name(std::string_view name) {
  if (name.empty()) return false;
  if (!(std::isalpha(static_cast<unsigned char>(name[0])) || name[0] == '_')) return false;
  for (char c : name)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_')) return false;
  return true;
}

std::pair<std::string, std::string> parse_env_entry(std::string_view text) {
  auto eq = text.find('=');
  if (eq == std::string_view::npos)
    throw_invalid("invalid environment entry '" + std::string(text) + "': expected KEY=VALUE");
  std::string key(text.substr(0, eq));
  if (!valid_env_name(key))
    throw_invalid("invalid environment variable name '" + key +
                  "': use letters, digits and underscores, not starting with a digit");
  std::string value(text.substr(eq + 1));
  if (value.find('\0') != std::string::npos)
    throw_invalid("environment value for '" + key + "' contains a NUL byte");
  return {key, value};
}

std::pair<std::string, std::string> parse_label(std::string_view text) {
  auto eq = text.find('=');
  if (eq == std::string_view::npos)
    throw_invalid("invalid label '" + std::string(text) + "': expected key=value");
  std::string key(text.substr(0, eq));
  std::string value(text.substr(eq + 1));
  bool ok = !key.empty() && key.size() <= 128 && std::isalnum(static_cast<unsigned char>(key[0]));
  for (char c : key)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-' ||
          c == '/'))
      ok = false;
  if (!ok)
    throw_invalid("invalid label key '" + key +
                  "': use letters, digits, '.', '_', '-', '/' (at most 128), starting with a "
                  "letter or digit");
  if (value.size() > 1024) throw_invalid("label value for '" + key + "' is longer than 1024 bytes");
  for (char c : value)
    if (static_cast<unsigned char>(c) < 0x20)
      throw_invalid("label value for '" + key + "' contains a control character");
  return {key, value};
}

bool valid_box_name(std::string_view name) {
  if (name.empty() || name.size() > 63) return false;
  if (!std::isalnum(static_cast<unsigned char>(name[0]))) return false;
  for (char c : name)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-'))
      return false;
  return true;
}

std::vector<std::string> split(std::string_view s, char sep) {
  std::vector<std::string> out;
  size_t start = 0;
  for (;;) {
    size_t pos = s.find(sep, start);
    if (pos == std::string_view::npos) {
      out.emplace_back(s.substr(start));
      return out;
    }
    out.emplace_back(s.substr(start, pos - start));
    start = pos + 1;
  }
}

std::string join(const std::vector<std::string>& parts, std::string_view sep) {
  std::string out;
  for (size_t i = 0; i < parts.size(); i++) {
    if (i) out += sep;
    out += parts[i];
  }
  return out;
}

namespace {

// Optimal string alignment distance (Levenshtein with swaps of neighbours).
size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
  for (size_t i = 0; i <= a.size(); i++) d[i][0] = i;
  for (size_t j = 0; j <= b.size(); j++) d[0][j] = j;
  for (size_t i = 1; i <= a.size(); i++)
    for (size_t j = 1; j <= b.size(); j++) {
      size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  return d[a.size()][b.size()];
}

}  // namespace

std::optional<std::string> closest_match(std::string_view word,
                                         const std::vector<std::string>& candidates) {
  if (word.empty()) return std::nullopt;
  size_t limit = std::min<size_t>(3, std::max<size_t>(1, word.size() / 3));
  std::optional<std::string> best;
  size_t best_d = limit + 1;
  for (const auto& c : candidates) {
    if (c == word) continue;
    size_t dist = edit_distance(word, c);
    if (dist < best_d) {
      best = c;
      best_d = dist;
    }
  }
  if (best) return best;
  if (word.size() >= 2)
    for (const auto& c : candidates)
      if (starts_with(c, word)) return c;
  return std::nullopt;
}

std::string trim(std::string_view s) {
  size_t a = 0, b = s.size();
  while (a < b && std::isspace(static_cast<unsigned char>(s[a]))) a++;
  while (b > a && std::isspace(static_cast<unsigned char>(s[b - 1]))) b--;
  return std::string(s.substr(a, b - a));
}

bool starts_with(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

std::string random_hex(size_t chars) {
  std::string bytes((chars + 1) / 2, '\0');
  size_t got = 0;
  while (got < bytes.size()) {
    ssize_t n = ::getrandom(bytes.data() + got, bytes.size() - got, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_sys("getrandom");
    }
    got += static_cast<size_t>(n);
  }
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned char b : bytes) {
    out.push_back(hex[b >> 4]);
    out.push_back(hex[b & 15]);
  }
  out.resize(chars);
  return out;
}

static const char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

std::string base64_encode(std::string_view data) {
  std::string out;
  out.reserve((data.size() + 2) / 3 * 4);
  size_t i = 0;
  while (i + 2 < data.size()) {
    uint32_t v = (static_cast<unsigned char>(data[i]) << 16) |
                 (static_cast<unsigned char>(data[i + 1]) << 8) |
                 static_cast<unsigned char>(data[i + 2]);
    out += kB64[(v >> 18) & 63];
    out += kB64[(v >> 12) & 63];
    out += kB64[(v >> 6) & 63];
    out += kB64[v & 63];
    i += 3;
  }
  if (i < data.size()) {
    uint32_t v = static_cast<unsigned char>(data[i]) << 16;
    if (i + 1 < data.size()) v |= static_cast<unsigned char>(data[i + 1]) << 8;
    out += kB64[(v >> 18) & 63];
    out += kB64[(v >> 12) & 63];
    out += (i + 1 < data.size()) ? kB64[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::optional<std::string> base64_decode(std::string_view text) {
  if (text.size() % 4 != 0) return std::nullopt;
  auto val = [](char c) -> int {
    const char* p = std::strchr(kB64, c);
    return (c && p) ? static_cast<int>(p - kB64) : -1;
  };
  std::string out;
  out.reserve(text.size() / 4 * 3);
  for (size_t i = 0; i < text.size(); i += 4) {
    int a = val(text[i]), b = val(text[i + 1]);
    if (a < 0 || b < 0) return std::nullopt;
    bool last = i + 4 == text.size();
    int c = text[i + 2] == '=' && last ? -2 : val(text[i + 2]);
    int d = text[i + 3] == '=' && last ? -2 : val(text[i + 3]);
    if (c == -1 || d == -1 || (c == -2 && d != -2)) return std::nullopt;
    uint32_t v = (a << 18) | (b << 12) | ((c < 0 ? 0 : c) << 6) | (d < 0 ? 0 : d);
    out.push_back(static_cast<char>((v >> 16) & 0xff));
    if (c >= 0) out.push_back(static_cast<char>((v >> 8) & 0xff));
    if (d >= 0) out.push_back(static_cast<char>(v & 0xff));
  }
  return out;
}

std::string format_bytes(uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    u++;
  }
  char buf[32];
  if (u == 0)
    std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(bytes));
  else
    std::snprintf(buf, sizeof buf, v < 10 ? "%.1f %s" : "%.0f %s", v, units[u]);
  return buf;
}

std::string format_duration_ms(uint64_t ms) {
  char buf[32];
  if (ms < 1000)
    std::snprintf(buf, sizeof buf, "%llums", static_cast<unsigned long long>(ms));
  else if (ms < 60'000)
    std::snprintf(buf, sizeof buf, "%.1fs", static_cast<double>(ms) / 1000.0);
  else if (ms < 3'600'000)
    std::snprintf(buf, sizeof buf, "%llum%02llus", static_cast<unsigned long long>(ms / 60'000),
                  static_cast<unsigned long long>((ms / 1000) % 60));
  else
    std::snprintf(buf, sizeof buf, "%lluh%02llum", static_cast<unsigned long long>(ms / 3'600'000),
                  static_cast<unsigned long long>((ms / 60'000) % 60));
  return buf;
}

std::string shell_join(const std::vector<std::string>& argv) {
  std::string out;
  for (size_t i = 0; i < argv.size(); i++) {
    if (i) out += ' ';
    const std::string& a = argv[i];
    bool plain = !a.empty();
    for (char c : a)
      if (!(std::isalnum(static_cast<unsigned char>(c)) || std::strchr("-_./=:,+@%", c)))
        plain = false;
    if (plain) {
      out += a;
    } else {
      out += '\'';
      for (char c : a) {
        if (c == '\'')
          out += "'\\''";
        else
          out += c;
      }
      out += '\'';
    }
  }
  return out;
}

}  // namespace upstream
