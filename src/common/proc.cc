#include "common/proc.h"

#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include "common/error.h"
#include "common/fd.h"
#include "common/strings.h"

namespace upstream {

namespace {

std::optional<std::string> read_proc(const std::string& path) {
  return try_read_file(path, 1 << 20);
}

}  // namespace

std::optional<uint64_t> process_start_time(pid_t pid) {
  auto stat = read_proc("/proc/" + std::to_string(pid) + "/stat");
  if (!stat) return std::nullopt;
  // The command name (field 2) may contain spaces and parentheses; fields resume after the last
  // ')'.
  auto close = stat->rfind(')');
  if (close == std::string::npos) return std::nullopt;
  auto fields = split(std::string_view(*stat).substr(close + 2), ' ');
  // fields[0] is field 3 (state); field 22 is fields[19].
  if (fields.size() < 20) return std::nullopt;
  if (fields[0] == "Z" || fields[0] == "X") return std::nullopt;
  return std::strtoull(fields[19].c_str(), nullptr, 10);
}

bool process_matches(pid_t pid, uint64_t start_time) {
  if (pid <= 0) return false;
  auto st = process_start_time(pid);
  return st && *st == start_time;
}

std::optional<MemoryUse> process_memory(pid_t pid) {
  auto text = read_proc("/proc/" + std::to_string(pid) + "/smaps_rollup");
  if (!text) return std::nullopt;
  MemoryUse m;
  for (const auto& line : split(*text, '\n')) {
    auto take = [&](const char* key, uint64_t& out) {
      if (starts_with(line, key))
        out = std::strtoull(line.c_str() + std::strlen(key), nullptr, 10) * 1024;
    };
    take("Rss:", m.rss);
    take("Pss:", m.pss);
  }
  return m;
}

std::string boot_id() {
  auto id = read_proc("/proc/sys/kernel/random/boot_id");
  return id ? trim(*id) : std::string();
}

std::string self_exe() {
  char buf[4096];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n < 0) throw_sys("readlink /proc/self/exe");
  return std::string(buf, static_cast<size_t>(n));
}

}  // namespace upstream
