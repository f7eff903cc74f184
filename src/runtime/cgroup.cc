#include "runtime/cgroup.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <set>
#include <thread>

#include "common/error.h"
#include "common/fd.h"
#include "common/strings.h"
#include "common/time.h"

namespace upstream::runtime {

namespace {

// cpuset carries no limit: a box is in a group of its own there so that readers that look up a
// box's CPU quota by its cpuset path (LXCFS, runtime/proc_view.h) find the box's.
const char* kLimitControllers[] = {"cpu", "cpuacct", "memory", "pids", "cpuset"};

void write_text(const std::string& path, const std::string& value) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) throw_sys("open " + path);
  if (::write(fd.get(), value.data(), value.size()) != static_cast<ssize_t>(value.size()))
    throw_sys("write '" + value + "' to " + path);
}

std::optional<std::string> read_text(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return std::nullopt;
  try {
    return read_all(fd.get(), 1 << 16);
  } catch (const Error&) {
    return std::nullopt;
  }
}

std::optional<uint64_t> read_u64(const std::string& path) {
  auto t = read_text(path);
  if (!t) return std::nullopt;
  std::string v = trim(*t);
  if (v.empty() || v == "max") return std::nullopt;
  return std::strtoull(v.c_str(), nullptr, 10);
}

std::optional<uint64_t> read_key(const std::string& path, const std::string& key) {
  auto t = read_text(path);
  if (!t) return std::nullopt;
  for (const auto& line : split(*t, '\n')) {
    auto f = split(line, ' ');
    if (f.size() == 2 && f[0] == key) return std::strtoull(f[1].c_str(), nullptr, 10);
  }
  return std::nullopt;
}

bool is_dir(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

void mkdir_if_missing(const std::string& path) {
  if (::mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) throw_sys("mkdir " + path);
}

// Removes a cgroup directory and its children, deepest first.
bool remove_tree(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (!d) return errno == ENOENT;
  std::vector<std::string> children;
  while (dirent* e = ::readdir(d))
    if (e->d_type == DT_DIR && std::strcmp(e->d_name, ".") && std::strcmp(e->d_name, ".."))
      children.push_back(dir + "/" + e->d_name);
  ::closedir(d);
  bool ok = true;
  for (const auto& c : children) ok &= remove_tree(c);
  if (::rmdir(dir.c_str()) != 0 && errno != ENOENT) ok = false;
  return ok;
}

}  // namespace

CgroupSystem::CgroupSystem(std::string v2_root, std::map<std::string, std::string> v1_mounts,
                           std::vector<std::string> v2_controllers)
    : v2_root_(std::move(v2_root)),
      v1_(std::move(v1_mounts)),
      v2_controllers_(std::move(v2_controllers)) {}

CgroupSystem CgroupSystem::detect(const std::string& fallback_v2) {
  std::string v2;
  std::map<std::string, std::string> v1;
  std::string text = read_file("/proc/self/mountinfo");
  for (const auto& line : split(text, '\n')) {
    // id parent maj:min root mountpoint options [optional...] - fstype source superoptions
    auto dash = line.find(" - ");
    if (dash == std::string::npos) continue;
    auto left = split(line.substr(0, dash), ' ');
    auto right = split(line.substr(dash + 3), ' ');
    if (left.size() < 5 || right.size() < 3) continue;
    const std::string& mnt = left[4];
    if (left[3] != "/") continue;  // only hierarchy roots as seen from here
    if (right[0] == "cgroup2" && v2.empty()) v2 = mnt;
    if (right[0] == "cgroup") {
      for (const auto& opt : split(right[2], ','))
        for (const char* c : kLimitControllers)
          if (opt == c && !v1.count(c)) v1[c] = mnt;
    }
  }
  if (v2.empty()) {
    // A pure v1 host: mount a unified hierarchy (no controllers) just for tracking processes.
    mkdir_if_missing(fallback_v2);
    if (::mount("cgroup2", fallback_v2.c_str(), "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                nullptr) != 0 &&
        errno != EBUSY)
      throw_sys(Errc::unavailable, "mount cgroup2 on " + fallback_v2);
    v2 = fallback_v2;
  }
  std::vector<std::string> v2c;
  if (auto t = read_text(v2 + "/cgroup.controllers"))
    for (const auto& c : split(trim(*t), ' '))
      if (!c.empty()) v2c.push_back(c);
  return CgroupSystem(v2, v1, v2c);
}

std::string CgroupSystem::controller_home(const std::string& controller) const {
  if (v1_.count(controller)) return "v1";
  std::string c = controller == "cpuacct" ? "cpu" : controller;
  for (const auto& x : v2_controllers_)
    if (x == c) return "v2";
  return "";
}

std::optional<std::string> CgroupSystem::v1_mount(const std::string& controller) const {
  auto it = v1_.find(controller);
  if (it == v1_.end()) return std::nullopt;
  return it->second;
}

std::string CgroupSystem::describe() const {
  std::vector<std::string> on_v1, on_v2;
  for (const char* c : kLimitControllers) {
    std::string home = controller_home(c);
    if (home == "v1") on_v1.push_back(c);
    if (home == "v2") on_v2.push_back(c);
  }
  std::string mode = on_v1.empty() ? "v2" : (on_v2.empty() ? "hybrid" : "mixed");
  return mode + " (v1 controllers: " + (on_v1.empty() ? "none" : join(on_v1, ",")) +
         "; v2 controllers: " + (on_v2.empty() ? "none" : join(on_v2, ",")) +
         "; tracking: " + v2_root_ + ")";
}

BoxCgroup::BoxCgroup(const CgroupSystem& sys, std::string group, std::string box_id)
    : sys_(sys), group_(std::move(group)), id_(std::move(box_id)) {}

std::string BoxCgroup::v2_dir() const { return sys_.v2_root() + "/" + group_ + "/" + id_; }

std::vector<std::string> BoxCgroup::dirs() const {
  std::vector<std::string> out{v2_dir()};
  std::set<std::string> seen{sys_.v2_root()};
  for (const char* c : kLimitControllers)
    if (auto m = sys_.v1_mount(c); m && seen.insert(*m).second)
      out.push_back(*m + "/" + group_ + "/" + id_);
  return out;
}

void write_v1_limits(const std::map<std::string, std::string>& dirs, const CgroupLimits& limits) {
  if (auto it = dirs.find("cpu"); it != dirs.end()) {
    write_text(it->second + "/cpu.cfs_period_us", "100000");
    write_text(it->second + "/cpu.cfs_quota_us",
               limits.cpu_milli ? std::to_string(*limits.cpu_milli * 100) : std::string("-1"));
  }
  if (auto it = dirs.find("memory"); it != dirs.end()) {
    std::string v = limits.memory ? std::to_string(*limits.memory) : std::string("-1");
    write_text(it->second + "/memory.limit_in_bytes", v);
    // With swap accounting, forbid swap on top of the limit.
    if (::access((it->second + "/memory.memsw.limit_in_bytes").c_str(), W_OK) == 0)
      write_text(it->second + "/memory.memsw.limit_in_bytes", v);
  }
  if (auto it = dirs.find("pids"); it != dirs.end())
    write_text(it->second + "/pids.max",
               limits.pids ? std::to_string(*limits.pids) : std::string("max"));
}

void write_v2_limits(const std::string& dir, const CgroupLimits& limits) {
  auto has = [&](const char* file) { return ::access((dir + "/" + file).c_str(), W_OK) == 0; };
  if (has("cpu.max"))
    write_text(dir + "/cpu.max", limits.cpu_milli
                                     ? std::to_string(*limits.cpu_milli * 100) + " 100000"
                                     : std::string("max 100000"));
  if (has("memory.max")) {
    write_text(dir + "/memory.max",
               limits.memory ? std::to_string(*limits.memory) : std::string("max"));
    if (has("memory.swap.max")) write_text(dir + "/memory.swap.max", "0");
  }
  if (has("pids.max"))
    write_text(dir + "/pids.max", limits.pids ? std::to_string(*limits.pids) : std::string("max"));
}

void BoxCgroup::create(const CgroupLimits& limits, uid_t box_root) {
  // v2: the group, with every controller it has handed down, then the box.
  std::string parent = sys_.v2_root() + "/" + group_;
  mkdir_if_missing(parent);
  std::vector<std::string> want;
  for (const char* c : {"cpu", "memory", "pids"})
    if (sys_.controller_home(c) == "v2") want.push_back(std::string("+") + c);
  if (!want.empty()) {
    write_text(sys_.v2_root() + "/cgroup.subtree_control", join(want, " "));
    write_text(parent + "/cgroup.subtree_control", join(want, " "));
  }
  std::string v2 = v2_dir();
  mkdir_if_missing(v2);
  write_v2_limits(v2, limits);
  // Delegation: the box init (box root) creates one child group per exec and moves each exec's
  // first process into it; it needs to own the directory and the files used for moving.
  for (const char* f : {"", "/cgroup.procs", "/cgroup.threads", "/cgroup.subtree_control"}) {
    std::string p = v2 + f;
    if (::chown(p.c_str(), box_root, box_root) != 0 && errno != ENOENT) throw_sys("chown " + p);
  }

  std::map<std::string, std::string> v1dirs;
  for (const char* c : kLimitControllers) {
    if (auto m = sys_.v1_mount(c)) {
      mkdir_if_missing(*m + "/" + group_);
      std::string d = *m + "/" + group_ + "/" + id_;
      mkdir_if_missing(d);
      v1dirs[c] = d;
    }
  }
  // A v1 cpuset group takes no process until it has CPUs and memory nodes: the parent's.
  if (auto it = v1dirs.find("cpuset"); it != v1dirs.end())
    for (const std::string& dir : {*sys_.v1_mount("cpuset") + "/" + group_, it->second})
      for (const char* f : {"cpuset.cpus", "cpuset.mems"}) {
        std::string parent = dir.substr(0, dir.rfind('/'));
        auto have = read_text(dir + "/" + f);
        auto want = read_text(parent + "/" + f);
        if (have && trim(*have).empty() && want && !trim(*want).empty())
          write_text(dir + "/" + f, trim(*want));
      }
  write_v1_limits(v1dirs, limits);
}

std::vector<std::string> BoxCgroup::procs_files() const {
  std::vector<std::string> out;
  for (const auto& d : dirs()) out.push_back(d + "/cgroup.procs");
  return out;
}

bool BoxCgroup::exists() const { return is_dir(v2_dir()); }

bool BoxCgroup::populated() const {
  auto v = read_key(v2_dir() + "/cgroup.events", "populated");
  return v && *v != 0;
}

CgroupUsage BoxCgroup::usage() const {
  CgroupUsage u;
  std::string v2 = v2_dir();
  if (auto v = read_key(v2 + "/cpu.stat", "usage_usec")) {
    u.cpu_us = *v;
  } else if (auto m = sys_.v1_mount("cpuacct")) {
    if (auto ns = read_u64(*m + "/" + group_ + "/" + id_ + "/cpuacct.usage")) u.cpu_us = *ns / 1000;
  }
  if (sys_.controller_home("memory") == "v1") {
    std::string d = *sys_.v1_mount("memory") + "/" + group_ + "/" + id_;
    u.memory = read_u64(d + "/memory.usage_in_bytes").value_or(0);
    u.memory_peak = read_u64(d + "/memory.max_usage_in_bytes").value_or(0);
    u.oom_kills = read_key(d + "/memory.oom_control", "oom_kill").value_or(0);
  } else {
    u.memory = read_u64(v2 + "/memory.current").value_or(0);
    u.memory_peak = read_u64(v2 + "/memory.peak").value_or(0);
    u.oom_kills = read_key(v2 + "/memory.events", "oom_kill").value_or(0);
  }
  if (sys_.controller_home("pids") == "v1")
    u.pids =
        read_u64(*sys_.v1_mount("pids") + "/" + group_ + "/" + id_ + "/pids.current").value_or(0);
  else
    u.pids = read_u64(v2 + "/pids.current").value_or(0);
  return u;
}

uint64_t BoxCgroup::oom_kills() const {
  if (sys_.controller_home("memory") == "v1")
    return read_key(*sys_.v1_mount("memory") + "/" + group_ + "/" + id_ + "/memory.oom_control",
                    "oom_kill")
        .value_or(0);
  return read_key(v2_dir() + "/memory.events", "oom_kill").value_or(0);
}

void BoxCgroup::kill_all() const {
  std::string v2 = v2_dir();
  if (::access((v2 + "/cgroup.kill").c_str(), W_OK) == 0) {
    try {
      write_text(v2 + "/cgroup.kill", "1");
      return;
    } catch (const Error&) {
    }
  }
  // Kernels without cgroup.kill: freeze, signal every member, thaw.
  set_frozen(true);
  for (const auto& d : dirs()) {
    auto procs = read_text(d + "/cgroup.procs");
    if (procs)
      for (const auto& p : split(*procs, '\n'))
        if (!p.empty()) ::kill(std::atoi(p.c_str()), SIGKILL);
  }
  set_frozen(false);
}

bool BoxCgroup::set_frozen(bool frozen, int wait_ms) const {
  std::string f = v2_dir() + "/cgroup.freeze";
  if (::access(f.c_str(), W_OK) != 0) return false;
  write_text(f, frozen ? "1" : "0");
  if (wait_ms <= 0) return true;
  // cgroup.events reports "frozen 1" once every task has stopped; it signals POLLPRI on change.
  int64_t deadline = mono_ms() + wait_ms;
  for (;;) {
    UniqueFd ev(::open((v2_dir() + "/cgroup.events").c_str(), O_RDONLY | O_CLOEXEC));
    if (!ev) return false;
    char buf[256];
    ssize_t n = ::read(ev.get(), buf, sizeof buf - 1);
    if (n < 0) return false;
    buf[n] = 0;
    std::string text(buf);
    if (text.find(frozen ? "frozen 1" : "frozen 0") != std::string::npos) return true;
    int64_t left = deadline - mono_ms();
    if (left <= 0) return false;
    // The kernel rate-limits cgroup.events notifications (one per 10 ms), so we also look again
    // every few hundred microseconds: a box usually freezes in well under a millisecond.
    pollfd p{ev.get(), POLLPRI, 0};
    if (::poll(&p, 1, 0) == 0) ::usleep(200);
  }
}

bool BoxCgroup::frozen() const {
  auto v = read_key(v2_dir() + "/cgroup.events", "frozen");
  return v && *v != 0;
}

bool BoxCgroup::destroy(int timeout_ms) {
  if (!is_dir(v2_dir())) {
    bool ok = true;
    for (const auto& d : dirs()) ok &= remove_tree(d);
    return ok;
  }
  kill_all();
  int64_t deadline = mono_ms() + timeout_ms;
  // cgroup.events reports "populated 0" once the last process has exited.
  while (populated() && mono_ms() < deadline) {
    UniqueFd ev(::open((v2_dir() + "/cgroup.events").c_str(), O_RDONLY | O_CLOEXEC));
    if (!ev) break;
    char buf[256];
    (void)!::read(ev.get(), buf, sizeof buf);
    pollfd p{ev.get(), POLLPRI, 0};
    ::poll(&p, 1, 20);
  }
  bool ok = true;
  for (const auto& d : dirs()) {
    bool removed = false;
    while (!(removed = remove_tree(d)) && mono_ms() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    ok &= removed;
  }
  return ok;
}

std::vector<std::string> BoxCgroup::list(const CgroupSystem& sys, const std::string& group) {
  std::vector<std::string> ids;
  DIR* d = ::opendir((sys.v2_root() + "/" + group).c_str());
  if (!d) return ids;
  while (dirent* e = ::readdir(d))
    if (e->d_type == DT_DIR && e->d_name[0] != '.') ids.emplace_back(e->d_name);
  ::closedir(d);
  return ids;
}

}  // namespace upstream::runtime
