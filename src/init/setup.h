// Turns a freshly cloned process (PID 1 of new mount, pid, uts, ipc, net and cgroup namespaces,
// still host root) into a box: assembles the root filesystem, pivots into it, and drops to box
// root in the box's user namespace with a reduced capability set.
#pragma once

#include <functional>

#include "common/fd.h"
#include "common/init_protocol.h"

namespace upstream::init {

struct BoxHandles {
  UniqueFd listen_sock;  // control socket, bound on the host before the pivot
  UniqueFd cgroup_dir;   // the box's cgroup v2 directory (may be empty)
  UniqueFd self_exe;     // this binary, for starting file workers inside the box
};

// Steps before the root is assembled: private mounts, control socket, handles to host objects.
BoxHandles prepare_host_handles(const initproto::Config& cfg);

// Called with a phase name as each step completes (for start-up timings).
using PhaseMark = std::function<void(const char*)>;

// Assembles the root filesystem, pivots into it, sets hostname and loopback.
void build_root(const initproto::Config& cfg, int userns_fd, const PhaseMark& mark);

// Enters the box user namespace as box root and reduces privileges.
void become_box_root(const initproto::Config& cfg, int userns_fd, const PhaseMark& mark);

}  // namespace upstream::init
