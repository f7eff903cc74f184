// Starting processes inside the box. The child is created with CLONE_VM | CLONE_VFORK: it shares
// our memory until it execs, so starting it costs no page-table copy. Everything it needs is
// prepared beforehand; in the child only system calls run, and failures are reported through the
// shared SpawnPlan.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace upstream::init {

struct SpawnRequest {
  std::vector<std::string> argv;
  std::vector<std::string> env;  // KEY=VALUE
  std::string cwd;
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;
  int stdio[3] = {-1, -1, -1};    // descriptors for 0, 1, 2; -1 means /dev/null
  int tty_fd = -1;                // when set, the slave pty used for 0, 1, 2 and made controlling
  int cgroup_procs_fd = -1;       // the child moves itself here first, so its whole tree is tracked
  int exec_fd = -1;               // exec this descriptor (execveat) instead of searching argv[0]
  unsigned long nofile_soft = 0;  // RLIMIT_NOFILE soft limit for the child; 0 keeps ours
};

struct SpawnResult {
  pid_t pid = -1;
  int err = 0;          // errno of the failed step, 0 on success
  std::string message;  // what failed, for the user
  int exit_code = 0;    // 126 or 127 when the command could not be started
};

// The child inherits our seccomp filter and no_new_privs (installed once, in become_box_root).
SpawnResult spawn(const SpawnRequest& req, int devnull_fd);

}  // namespace upstream::init
