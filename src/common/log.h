// One line per event on stderr: time, program and pid, level, what happened (with the errno's
// text when there is one). A long-running daemon (netd) logs what it could not do instead of
// swallowing it. UPSTREAM_LOG=debug|info|warning|error sets the least level written (info).
#pragma once

#include <string>
#include <string_view>

namespace upstream {

enum class LogLevel { debug, info, warning, error };

// The program name on every line ("netd").
void set_log_name(std::string name);
bool log_enabled(LogLevel level);
void log(LogLevel level, std::string_view message);
// "message: strerror(err)".
void log_errno(LogLevel level, std::string_view message, int err);

}  // namespace upstream
