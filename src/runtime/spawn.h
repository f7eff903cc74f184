// Starting a box's init: one clone into new mount, pid, uts, ipc and net namespaces (and a
// cgroup namespace rooted at the box's cgroups), exec of the static init binary, and the
// start-up handshake over a socket pair.
#pragma once

#include <sys/types.h>

#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/fd.h"

namespace upstream::runtime {

struct InitSpawn {
  std::string init_path;
  std::string box_id;
  int userns_fd = -1;
  int slot_lock_fd = -1;
  std::vector<std::string> cgroup_procs;  // joined by the child before anything else
  nlohmann::json config;                  // initproto::Config as JSON
  int timeout_ms = 20000;
  // Called between namespace creation and root assembly when the config asks to wait for a
  // network; receives the init's host pid.
  std::function<void(pid_t)> attach_network;
};

struct InitProcess {
  pid_t pid = -1;
  uint64_t start_time = 0;
  nlohmann::json timings_us;  // the init's own start-up phases
};

// Throws Error with the init's own message when the box cannot be built; the half-made init is
// killed and reaped before returning.
InitProcess spawn_init(const InitSpawn& spec);

}  // namespace upstream::runtime
