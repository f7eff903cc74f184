#include "common/proc.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
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

void run_tool(const std::vector<std::string>& argv, const std::string& input) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  int in[2], err[2];
  if (::pipe2(in, O_CLOEXEC) != 0) throw_sys("pipe");
  UniqueFd in_r(in[0]), in_w(in[1]);
  if (::pipe2(err, O_CLOEXEC) != 0) throw_sys("pipe");
  UniqueFd err_r(err[0]), err_w(err[1]);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, in_r.get(), 0);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, err_w.get(), 2);
  pid_t pid;
  int rc = posix_spawnp(&pid, args[0], &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0)
    throw Error(Errc::unavailable, argv[0] + " could not be run: " + errno_string(rc), rc);
  in_r.reset();
  err_w.reset();
  try {
    if (!input.empty()) write_all(in_w.get(), input);
  } catch (const Error&) {
    // It stopped reading; its status and stderr say why.
  }
  in_w.reset();
  std::string msg;
  char buf[4096];
  for (ssize_t n; (n = ::read(err_r.get(), buf, sizeof buf)) != 0;) {
    if (n < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (msg.size() < 65536) msg.append(buf, static_cast<size_t>(n));
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    throw Error(Errc::unavailable,
                join(argv, " ") + " failed" + (trim(msg).empty() ? "" : ": " + trim(msg)));
}

void start_daemon(const std::string& exe, const std::vector<std::string>& argv,
                  const std::string& log) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t child = ::fork();
  if (child < 0) throw_sys("fork " + exe);
  if (child == 0) {
    ::setsid();
    if (::fork() != 0) ::_exit(0);
    int null = ::open("/dev/null", O_RDWR);
    int out = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
    ::dup2(null, 0);
    ::dup2(out >= 0 ? out : null, 1);
    ::dup2(out >= 0 ? out : null, 2);
    ::syscall(SYS_close_range, 3, ~0u, 0);
    ::execv(exe.c_str(), args.data());
    ::_exit(127);
  }
  int status;
  ::waitpid(child, &status, 0);
}

}  // namespace upstream
