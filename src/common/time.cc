#include "common/time.h"

#include <time.h>

#include <cstdio>
#include <stdexcept>

#include "common/error.h"
#include "common/strings.h"

namespace upstream {

int64_t now_ms() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1'000'000;
}

int64_t mono_ms() { return mono_us() / 1000; }

int64_t mono_us() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000 + ts.tv_nsec / 1000;
}

std::string format_time(int64_t epoch_ms) {
  if (epoch_ms <= 0) return "";
  time_t secs = static_cast<time_t>(epoch_ms / 1000);
  tm t;
  gmtime_r(&secs, &t);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", t.tm_year + 1900,
                t.tm_mon + 1, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec,
                static_cast<int>(epoch_ms % 1000));
  return buf;
}

int64_t parse_time(const std::string& text) {
  if (text.empty()) return 0;
  tm t{};
  int ms = 0;
  char z = 0;
  if (std::sscanf(text.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d.%3d%c", &t.tm_year, &t.tm_mon, &t.tm_mday,
                  &t.tm_hour, &t.tm_min, &t.tm_sec, &ms, &z) != 8 ||
      z != 'Z')
    return 0;
  t.tm_year -= 1900;
  t.tm_mon -= 1;
  return static_cast<int64_t>(timegm(&t)) * 1000 + ms;
}

int64_t parse_when(const std::string& text, int64_t now, const std::string& what) {
  if (text == "now") return now;
  tm t{};
  int ms = 0, n = 0;
  char z = 0;
  const char* s = text.c_str();
  if (std::sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d.%3dZ%n", &t.tm_year, &t.tm_mon, &t.tm_mday,
                  &t.tm_hour, &t.tm_min, &t.tm_sec, &ms, &n) == 7 &&
      static_cast<size_t>(n) == text.size()) {
  } else if (t = tm{}, ms = 0, n = 0;
             std::sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%c%n", &t.tm_year, &t.tm_mon, &t.tm_mday,
                         &t.tm_hour, &t.tm_min, &t.tm_sec, &z, &n) == 7 &&
             z == 'Z' && static_cast<size_t>(n) == text.size()) {
  } else if (t = tm{}, n = 0;
             std::sscanf(s, "%4d-%2d-%2d%n", &t.tm_year, &t.tm_mon, &t.tm_mday, &n) == 3 &&
             static_cast<size_t>(n) == text.size()) {
  } else {
    std::string d = text;
    if (!d.empty() && d.back() == 'd') {  // days, on top of what parse_duration_ms reads
      try {
        size_t used = 0;
        double days = std::stod(d.substr(0, d.size() - 1), &used);
        if (used == d.size() - 1 && days >= 0 && days < 100000)
          return now - static_cast<int64_t>(days * 86400000.0);
      } catch (const std::exception&) {
      }
    } else {
      try {
        return now - static_cast<int64_t>(parse_duration_ms(text, what));
      } catch (const Error&) {
      }
    }
    throw_invalid("invalid " + what + " '" + text +
                  "': use now, a time ago such as 24h or 7d, a date such as 2026-12-01, or a "
                  "time such as 2026-12-01T10:00:00Z");
  }
  if (t.tm_mon < 1 || t.tm_mon > 12 || t.tm_mday < 1 || t.tm_mday > 31 || t.tm_hour > 23 ||
      t.tm_min > 59 || t.tm_sec > 60)
    throw_invalid("invalid " + what + " '" + text + "': no such date or time");
  t.tm_year -= 1900;
  t.tm_mon -= 1;
  return static_cast<int64_t>(timegm(&t)) * 1000 + ms;
}

std::string format_ago(int64_t epoch_ms, int64_t now) {
  if (epoch_ms <= 0) return "-";
  int64_t s = (now - epoch_ms) / 1000;
  char buf[40];
  if (s < 2) return "just now";
  if (s < 60)
    std::snprintf(buf, sizeof buf, "%lld seconds ago", static_cast<long long>(s));
  else if (s < 3600)
    std::snprintf(buf, sizeof buf, "%lld minute%s ago", static_cast<long long>(s / 60),
                  s / 60 == 1 ? "" : "s");
  else if (s < 86400)
    std::snprintf(buf, sizeof buf, "%lld hour%s ago", static_cast<long long>(s / 3600),
                  s / 3600 == 1 ? "" : "s");
  else
    std::snprintf(buf, sizeof buf, "%lld day%s ago", static_cast<long long>(s / 86400),
                  s / 86400 == 1 ? "" : "s");
  return buf;
}

}  // namespace upstream

#include <unistd.h>
#include <cstdlib>

namespace upstream {

void debug_log(const std::string& line) {
  static const bool on = std::getenv("UPSTREAM_DEBUG") != nullptr;
  static const int64_t start = mono_us();
  if (!on) return;
  char stamp[32];
  std::snprintf(stamp, sizeof stamp, "%9.3f ms ", static_cast<double>(mono_us() - start) / 1000.0);
  std::string out = "upstream: debug: " + std::string(stamp) + line + "\n";
  (void)!::write(2, out.data(), out.size());
}

}  // namespace upstream
