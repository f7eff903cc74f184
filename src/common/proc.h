// Facts about processes read from /proc.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace upstream {

// Start time of a process in clock ticks since boot (field 22 of /proc/PID/stat). Together with
// the pid it names one process across pid reuse.
std::optional<uint64_t> process_start_time(pid_t pid);

// True if pid is alive (not a zombie) and started at start_time.
bool process_matches(pid_t pid, uint64_t start_time);

// Resident and proportional set sizes, in bytes, from /proc/PID/smaps_rollup.
struct MemoryUse {
  uint64_t rss = 0;
  uint64_t pss = 0;
};
std::optional<MemoryUse> process_memory(pid_t pid);

// This boot's id; changes when the host reboots.
std::string boot_id();

// Absolute path of the running executable.
std::string self_exe();

// Runs a host tool (found on PATH) and waits for it; `input` goes to its stdin, its stdout to
// /dev/null. Throws unavailable naming the command and quoting its stderr when it fails.
void run_tool(const std::vector<std::string>& argv, const std::string& input = "");

// Starts a daemon that outlives its starter: in a session of its own, reparented to init, with
// stdin from /dev/null, stdout and stderr appended to `log` (0600) and no other descriptor.
// Returns once it has been started (not once it serves); throws if it cannot fork.
void start_daemon(const std::string& exe, const std::vector<std::string>& argv,
                  const std::string& log);

}  // namespace upstream
