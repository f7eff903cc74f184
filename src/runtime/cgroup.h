// Control groups, v1 and v2 behind one interface.
//
// Limits go to whichever hierarchy holds each controller (v1 controllers on a hybrid host like
// ours, the unified hierarchy on a pure v2 host). Process tracking, killing and freezing always
// use the unified (v2) hierarchy, which exists on hybrid hosts too - if it is not mounted at all
// we mount one ourselves. That gives every box, and every exec inside it, an atomic
// `cgroup.kill` and `cgroup.freeze`.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace upstream::runtime {

struct CgroupLimits {
  std::optional<uint64_t> cpu_milli;  // 1000 = one full CPU
  std::optional<uint64_t> memory;     // bytes; swap is not allowed on top
  std::optional<uint64_t> pids;
};

struct CgroupUsage {
  uint64_t cpu_us = 0;
  uint64_t memory = 0;
  uint64_t memory_peak = 0;
  uint64_t pids = 0;
  uint64_t oom_kills = 0;
};

class CgroupSystem {
 public:
  // Reads /proc/self/mountinfo (and mounts a unified hierarchy at fallback_v2 if none exists).
  static CgroupSystem detect(const std::string& fallback_v2);
  // For tests: explicit mount points.
  CgroupSystem(std::string v2_root, std::map<std::string, std::string> v1_mounts,
               std::vector<std::string> v2_controllers);
  CgroupSystem() = default;

  const std::string& v2_root() const { return v2_root_; }
  // Where a controller lives: "v1", "v2" or "" (unavailable).
  std::string controller_home(const std::string& controller) const;
  std::optional<std::string> v1_mount(const std::string& controller) const;
  std::string describe() const;  // e.g. "hybrid (v1: cpu,memory,pids; v2: tracking)"

 private:
  std::string v2_root_;
  std::map<std::string, std::string> v1_;  // controller -> mount point
  std::vector<std::string> v2_controllers_;
};

// The cgroups of one box: <hierarchy>/<group>/<box id> in each hierarchy that is used.
class BoxCgroup {
 public:
  BoxCgroup(const CgroupSystem& sys, std::string group, std::string box_id);

  // Creates the directories, applies limits, and delegates the v2 group to box root
  // (host uid `box_root`) so the box init can create a child group per exec.
  void create(const CgroupLimits& limits, uid_t box_root);
  // cgroup.procs files a process writes "0" to, to join every hierarchy of this box.
  std::vector<std::string> procs_files() const;
  std::string v2_dir() const;
  bool exists() const;
  bool populated() const;

  CgroupUsage usage() const;
  uint64_t oom_kills() const;
  // Kills every process of the box, waits until they are gone, removes all directories.
  // Returns false if something could not be removed within the timeout.
  bool destroy(int timeout_ms = 3000);
  void kill_all() const;
  // Freezes or thaws every process of the box (v2 cgroup.freeze). With wait_ms > 0, waits until
  // the kernel reports the whole group frozen (or thawed); false if it did not within that time.
  bool set_frozen(bool frozen, int wait_ms = 0) const;
  bool frozen() const;

  // All box ids that have cgroups under `group` (for reconciliation). Every box has a group in
  // the unified hierarchy from the first step of its creation to the last step of its removal,
  // so listing that hierarchy finds every box.
  static std::vector<std::string> list(const CgroupSystem& sys, const std::string& group);

 private:
  std::vector<std::string> dirs() const;  // every directory of this box, v2 first
  const CgroupSystem& sys_;
  std::string group_;
  std::string id_;
};

// Writes limits to a group directory in the v1 or v2 format (exposed for tests).
void write_v1_limits(const std::map<std::string, std::string>& dirs, const CgroupLimits& limits);
void write_v2_limits(const std::string& dir, const CgroupLimits& limits);

}  // namespace upstream::runtime
