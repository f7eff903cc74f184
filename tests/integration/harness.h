// Integration tests run real boxes through the engine library, in a state directory of their
// own that is removed (pool unmounted, every box gone) when the test binary ends.
#pragma once

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "engine/engine.h"

namespace upstream::testing {

Engine& engine();
const std::string& home();

struct Result {
  ExecRecord rec;
  std::string out, err;
  int code() const { return rec.exit_code.value_or(-1); }
};

// Runs a command to completion in a box.
Result run(const std::string& box, const std::vector<std::string>& argv, ExecSpec spec = {});
// Runs a shell line; fails the test unless it exits 0. Returns stdout.
std::string sh(const std::string& box, const std::string& line, const std::string& user = "");

// A box removed at the end of the test.
class ScopedBox {
 public:
  explicit ScopedBox(BoxSpec spec = {});
  ~ScopedBox();
  const std::string& id() const { return rec.id; }
  BoxRecord rec;
};

// Host-side facts used to check that nothing leaks.
std::vector<std::string> host_mounts_under(const std::string& prefix);
// Live (not zombie) processes running as host uid `uid` or above.
std::vector<pid_t> processes_with_uid_at_least(uid_t uid);
std::string cgroup_group();  // "upstream-<instance>"
bool path_exists(const std::string& p);

// A minimal root filesystem (busybox) built once for image tests.
const std::string& busybox_rootfs();

}  // namespace upstream::testing
