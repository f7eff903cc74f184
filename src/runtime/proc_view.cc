#include "runtime/proc_view.h"

#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <mutex>
#include <thread>

#include "common/error.h"
#include "common/fs.h"
#include "common/proc.h"

namespace upstream::runtime {

namespace {

constexpr const char* kDir = "/run/upstream/lxcfs";
constexpr long kFuseMagic = 0x65735546;

// Whether the mount at kDir answers: a FUSE file system whose daemon answers statfs (one round
// trip, ~25 us here; reading a file costs ~180 us, since LXCFS computes it). A mount left by a
// daemon that died answers ENOTCONN.
enum class State { serving, absent, dead };

State probe() {
  struct statfs sf {};
  if (::statfs(kDir, &sf) != 0) return errno == ENOTCONN ? State::dead : State::absent;
  return sf.f_type == kFuseMagic ? State::serving : State::absent;
}

std::string find_lxcfs() {
  for (const char* p : {"/usr/bin/lxcfs", "/usr/local/bin/lxcfs", "/bin/lxcfs"})
    if (::access(p, X_OK) == 0) return p;
  return "";
}

// Starts lxcfs as a daemon of its own (it outlives the program that started it, as netd does).
// --enable-cfs: a box's CPU count follows its CPU quota (--cpus), not only its cpuset.
void start(const std::string& exe) {
  start_daemon(exe,
               {"lxcfs", "--foreground", "--enable-cfs", "-p", std::string(kDir) + ".pid", kDir},
               std::string(kDir) + ".log");
}

}  // namespace

const std::vector<std::string>& proc_view_files() {
  static const std::vector<std::string> files = {"proc/meminfo",
                                                 "proc/cpuinfo",
                                                 "proc/stat",
                                                 "proc/uptime",
                                                 "proc/swaps",
                                                 "proc/diskstats",
                                                 "sys/devices/system/cpu/online"};
  return files;
}

std::string ensure_proc_view(std::string* why) {
  static std::mutex mu;
  std::lock_guard g(mu);
  if (probe() == State::serving) return kDir;
  std::string exe = find_lxcfs();
  if (exe.empty()) {
    if (why) *why = "lxcfs is not installed (apt-get install lxcfs)";
    return "";
  }
  make_dirs("/run/upstream", 0755);
  // One starter at a time on the host, across installations and processes.
  FileLock lock(std::string(kDir) + ".lock", 10'000);
  State s = probe();
  if (s == State::serving) return kDir;
  if (s == State::dead) ::umount2(kDir, MNT_DETACH);
  ::mkdir(kDir, 0755);
  start(exe);
  for (int i = 0; i < 400; i++) {
    if (probe() == State::serving) return kDir;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (why) *why = "lxcfs did not come up at " + std::string(kDir) + "; see " + kDir + ".log";
  return "";
}

}  // namespace upstream::runtime
