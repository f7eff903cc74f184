#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <dirent.h>

#include <algorithm>
#include <random>

#include "common/error.h"
#include "common/fd.h"
#include "harness.h"
#include "runtime/slots.h"

namespace upstream::testing {
namespace {

std::vector<std::string> box_cgroups() {
  std::vector<std::string> out;
  std::string dir = "/sys/fs/cgroup/unified/" + cgroup_group();
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d))
      if (e->d_type == DT_DIR && e->d_name[0] != '.') out.emplace_back(e->d_name);
    ::closedir(d);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<std::string> volumes() {
  std::vector<std::string> out;
  if (DIR* d = ::opendir((home() + "/pool/boxes").c_str())) {
    while (dirent* e = ::readdir(d))
      if (e->d_name[0] != '.') out.emplace_back(e->d_name);
    ::closedir(d);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<std::string> record_ids() {
  std::vector<std::string> out;
  for (const auto& b : engine().list_boxes()) out.push_back(b.id);
  std::sort(out.begin(), out.end());
  return out;
}

// Runs `work` with its own engine in a child process and kills it with SIGKILL after `delay_us`.
void kill_during(int delay_us, const std::function<void(Engine&)>& work) {
  pid_t pid = ::fork();
  if (pid == 0) {
    try {
      auto e = Engine::open(engine().options());
      work(*e);
    } catch (...) {
    }
    _exit(0);
  }
  ::usleep(static_cast<useconds_t>(delay_us));
  ::kill(pid, SIGKILL);
  int st;
  ::waitpid(pid, &st, 0);
}

TEST(Crash, InitKilledIsRecordedAsStopped) {
  ScopedBox box;
  sh(box.id(), "echo data > /home/user/kept");
  BoxRecord b = engine().get_box(box.id());
  ASSERT_GT(b.init_pid, 0);
  ASSERT_EQ(::kill(b.init_pid, SIGKILL), 0);
  for (int i = 0; i < 100 && ::kill(b.init_pid, 0) == 0; i++) ::usleep(10000);
  BoxRecord after = engine().get_box(box.id());
  EXPECT_EQ(after.state, "stopped");
  EXPECT_EQ(after.state_reason, "box init exited unexpectedly");
  EXPECT_FALSE(path_exists("/sys/fs/cgroup/unified/" + cgroup_group() + "/" + b.id));
  EXPECT_FALSE(path_exists(home() + "/run/" + b.id + ".sock"));
  engine().start_box(box.id());
  EXPECT_EQ(sh(box.id(), "cat /home/user/kept"), "data\n");
}

TEST(Crash, EngineKilledAnywhereDuringCreateAndRemoveLeavesNothing) {
  // Existing, healthy boxes must come through untouched.
  ScopedBox survivor;
  sh(survivor.id(), "echo alive > /tmp/mark");
  size_t procs_before = processes_with_uid_at_least(runtime::kUidBase).size();
  std::mt19937 rng(42);
  for (int i = 0; i < 12; i++) {
    int delay = 2000 + static_cast<int>(rng() % 120000);
    kill_during(delay, [i](Engine& e) {
      BoxSpec s;
      s.name = "crash-" + std::to_string(i);
      BoxRecord b = e.create_box(s);
      e.remove_box(b.id, true);
    });
  }
  engine().reconcile();
  // Every record is in a settled state; every volume and cgroup belongs to a record.
  for (const auto& b : engine().list_boxes()) {
    EXPECT_TRUE(b.state == "running" || b.state == "stopped") << b.id << " " << b.state;
  }
  auto ids = record_ids();
  for (const auto& v : volumes()) {
    EXPECT_TRUE(std::binary_search(ids.begin(), ids.end(), v)) << "stray volume " << v;
  }
  for (const auto& c : box_cgroups()) {
    EXPECT_TRUE(std::binary_search(ids.begin(), ids.end(), c)) << "stray cgroup " << c;
  }
  // Boxes that were fully created before the kill are complete and usable; remove them.
  for (const auto& b : engine().list_boxes()) {
    if (b.id == survivor.id()) continue;
    if (b.state == "running") {
      EXPECT_EQ(sh(b.id, "echo ok"), "ok\n");
    }
    engine().remove_box(b.id, true);
  }
  EXPECT_EQ(processes_with_uid_at_least(runtime::kUidBase).size(), procs_before);
  EXPECT_EQ(sh(survivor.id(), "cat /tmp/mark"), "alive\n");
}

TEST(Crash, EngineKilledDuringStopFinishesOnNextStart) {
  ScopedBox box;
  ExecSpec x;
  x.shell = "trap '' TERM; sleep 100";
  x.background = true;
  engine().start_exec(box.id(), x);
  kill_during(100000, [&](Engine& e) { e.stop_box(box.id(), 10000); });  // killed mid-grace
  engine().reconcile();
  BoxRecord b = engine().get_box(box.id());
  EXPECT_EQ(b.state, "stopped");
  EXPECT_FALSE(path_exists("/sys/fs/cgroup/unified/" + cgroup_group() + "/" + b.id));
}

TEST(Crash, AbandonedFileSessionOnAStoppedBoxIsCleanedUp) {
  ScopedBox box;
  engine().stop_box(box.id(), 0);
  // The caller dies while a file session holds the stopped box assembled.
  kill_during(400000, [&](Engine& e) {
    auto fs = e.files(box.id());
    fs->write("/home/user/f", "x");
    ::pause();
  });
  EXPECT_TRUE(path_exists("/sys/fs/cgroup/unified/" + cgroup_group() + "/" + box.id()));
  engine().reconcile();
  EXPECT_FALSE(path_exists("/sys/fs/cgroup/unified/" + cgroup_group() + "/" + box.id()));
  EXPECT_EQ(engine().get_box(box.id()).state, "stopped");
  engine().start_box(box.id());
  EXPECT_EQ(sh(box.id(), "cat /home/user/f"), "x");
}

TEST(Crash, BackgroundExecStatusSurvivesTheCaller) {
  ScopedBox box;
  // A foreground exec whose caller dies: the exec still completes and its status is recorded.
  kill_during(300000, [&](Engine& e) {
    ExecSpec x;
    x.shell = "sleep 0.6; echo finished > /tmp/done";
    e.start_exec(box.id(), x)->wait({});
  });
  ::usleep(800000);
  auto execs = engine().list_execs(box.id(), false);
  ASSERT_FALSE(execs.empty());
  EXPECT_EQ(execs.back().state, "exited");
  EXPECT_EQ(execs.back().exit_code, 0);
  EXPECT_EQ(sh(box.id(), "cat /tmp/done"), "finished\n");
}

}  // namespace
}  // namespace upstream::testing
