#pragma once

#include <cstdint>
#include <string>

namespace upstream {

// Milliseconds since the Unix epoch (wall clock), for records.
int64_t now_ms();
// Monotonic milliseconds and microseconds, for measuring.
int64_t mono_ms();
int64_t mono_us();
// "2026-11-22T10:24:03.123Z"
std::string format_time(int64_t epoch_ms);
// The inverse of format_time; 0 for an empty or malformed text.
int64_t parse_time(const std::string& text);
// A moment given by a user: "now", a duration ago ("24h", "7d"), a date ("2026-12-01", midnight
// UTC) or a time ("2026-12-01T10:00:00Z", with or without milliseconds). Throws invalid_argument
// naming `what`.
int64_t parse_when(const std::string& text, int64_t now, const std::string& what);
// "3 minutes ago", "just now", for listings.
std::string format_ago(int64_t epoch_ms, int64_t now);

}  // namespace upstream

namespace upstream {

// With UPSTREAM_DEBUG set, writes a timestamped line to stderr (for diagnosing slow starts).
void debug_log(const std::string& line);

}  // namespace upstream
