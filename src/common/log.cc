#include "common/log.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <mutex>

#include "common/error.h"
#include "common/time.h"

namespace upstream {

namespace {

std::mutex mu;
std::string name = "upstream";

LogLevel threshold() {
  static const LogLevel t = [] {
    const char* v = std::getenv("UPSTREAM_LOG");
    std::string s = v ? v : "";
    if (s == "debug") return LogLevel::debug;
    if (s == "warning") return LogLevel::warning;
    if (s == "error") return LogLevel::error;
    return LogLevel::info;
  }();
  return t;
}

const char* level_name(LogLevel l) {
  switch (l) {
    case LogLevel::debug:
      return "debug";
    case LogLevel::info:
      return "info";
    case LogLevel::warning:
      return "warning";
    case LogLevel::error:
      return "error";
  }
  return "info";
}

}  // namespace

void set_log_name(std::string n) {
  std::lock_guard g(mu);
  name = std::move(n);
}

bool log_enabled(LogLevel level) { return level >= threshold(); }

void log(LogLevel level, std::string_view message) {
  if (!log_enabled(level)) return;
  std::string line = format_time(now_ms());
  std::lock_guard g(mu);
  line += " " + name + "[" + std::to_string(::getpid()) + "] " + level_name(level) + ": ";
  line.append(message);
  line += "\n";
  (void)!::write(2, line.data(), line.size());
}

void log_errno(LogLevel level, std::string_view message, int err) {
  log(level, std::string(message) + ": " + errno_string(err));
}

}  // namespace upstream
