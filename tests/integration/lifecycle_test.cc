#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <future>
#include <thread>

#include "common/error.h"
#include "common/fs.h"
#include "common/proc.h"
#include "common/strings.h"
#include "harness.h"
#include "runtime/cgroup.h"
#include "runtime/slots.h"

namespace upstream::testing {
namespace {

TEST(Lifecycle, CreateExecStopStartRemove) {
  BoxSpec spec;
  spec.name = "life";
  spec.labels = {{"suite", "lifecycle"}};
  spec.env = {"GREETING=hello"};
  BoxRecord b = engine().create_box(spec);
  EXPECT_EQ(b.state, "running");
  EXPECT_EQ(b.name, "life");
  EXPECT_EQ(sh("life", "echo $GREETING; hostname; pwd"), "hello\nlife\n/home/user\n");
  sh("life",
     "echo kept > /home/user/state.txt && apt-get --version >/dev/null && touch "
     "/usr/local/bin/tool");

  BoxRecord stopped = engine().stop_box("life");
  EXPECT_EQ(stopped.state, "stopped");
  EXPECT_FALSE(runtime::BoxCgroup(runtime::CgroupSystem::detect("/run/upstream/cgroup2"),
                                  cgroup_group(), b.id)
                   .exists());
  try {
    run("life", {"true"});
    FAIL() << "exec in a stopped box";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::failed_precondition);
  }

  EXPECT_EQ(engine().start_box("life").state, "running");
  EXPECT_EQ(sh("life", "cat /home/user/state.txt; ls /usr/local/bin/tool"),
            "kept\n/usr/local/bin/tool\n");

  try {
    engine().remove_box("life", false);
    FAIL() << "removed a running box without force";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::failed_precondition);
  }
  std::string volume = home() + "/pool/boxes/" + b.id;
  EXPECT_TRUE(path_exists(volume));
  engine().remove_box("life", true);
  EXPECT_FALSE(path_exists(volume));
  EXPECT_FALSE(path_exists(home() + "/run/" + b.id + ".sock"));
  EXPECT_THROW(engine().get_box("life"), Error);
  auto ev = engine().list_boxes();
  for (const auto& x : ev) {
    EXPECT_NE(x.id, b.id);
  }
}

TEST(Lifecycle, NothingLeaksAfterRemove) {
  auto mounts_before = host_mounts_under(home());
  size_t procs_before = processes_with_uid_at_least(runtime::kUidBase).size();
  std::string id;
  {
    ScopedBox box;
    id = box.id();
    sh(id, "sleep 100 & sleep 100 & echo started");
    EXPECT_GT(processes_with_uid_at_least(runtime::kUidBase).size(), procs_before);
  }
  EXPECT_EQ(host_mounts_under(home()), mounts_before);  // box mounts never appear on the host
  EXPECT_EQ(processes_with_uid_at_least(runtime::kUidBase).size(), procs_before);
  for (const char* h : {"unified", "memory", "pids", "cpu", "cpuacct"})
    EXPECT_FALSE(path_exists("/sys/fs/cgroup/" + std::string(h) + "/" + cgroup_group() + "/" + id))
        << h;
  EXPECT_FALSE(path_exists(home() + "/pool/boxes/" + id));
}

TEST(Lifecycle, BoxOutlivesTheProcessThatMadeIt) {
  // Another process opens the same state directory, creates a box and exits.
  pid_t pid = ::fork();
  if (pid == 0) {
    try {
      EngineOptions o = engine().options();
      auto e = Engine::open(o);
      BoxSpec s;
      s.name = "orphan";
      e->create_box(s);
      e->start_exec("orphan", [] {
        ExecSpec x;
        x.shell = "sleep 30";
        x.background = true;
        return x;
      }());
      _exit(0);
    } catch (...) {
      _exit(1);
    }
  }
  int st;
  ASSERT_EQ(::waitpid(pid, &st, 0), pid);
  ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  BoxRecord b = engine().get_box("orphan");
  EXPECT_EQ(b.state, "running");
  EXPECT_EQ(sh("orphan", "ps -eo comm= | grep -c '^sleep$'"), "1\n");
  engine().remove_box("orphan", true);
}

TEST(Lifecycle, NamesIdsAndBadSpecsChangeNothing) {
  ScopedBox a([] {
    BoxSpec s;
    s.name = "uniq";
    return s;
  }());
  size_t before = engine().list_boxes().size();
  BoxSpec dup;
  dup.name = "uniq";
  EXPECT_THROW(engine().create_box(dup), Error);
  BoxSpec bad_image;
  bad_image.image = "dir:/nope";
  EXPECT_THROW(engine().create_box(bad_image), Error);
  BoxSpec bad_env;
  bad_env.env = {"NOT VALID"};
  EXPECT_THROW(engine().create_box(bad_env), Error);
  BoxSpec bad_mem;
  bad_mem.limits.memory = 1024;
  EXPECT_THROW(engine().create_box(bad_mem), Error);
  EXPECT_EQ(engine().list_boxes().size(), before);
  EXPECT_EQ(engine().get_box(a.id().substr(0, 6)).name, "uniq");
  EXPECT_THROW(engine().get_box("no-such-box"), Error);
}

TEST(Lifecycle, StopEndsProcessesThatIgnoreTerm) {
  ScopedBox box;
  ExecSpec x;
  x.shell = "trap '' TERM; touch /tmp/ready; while true; do sleep 0.1; done";
  x.background = true;
  engine().start_exec(box.id(), x);
  sh(box.id(), "while [ ! -e /tmp/ready ]; do sleep 0.01; done");
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(engine().stop_box(box.id(), 300).state, "stopped");
  auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)
          .count();
  EXPECT_GE(ms, 250);  // the grace period was honoured before the kill
  auto execs = engine().list_execs(box.id(), false);
  ASSERT_FALSE(execs.empty());
  EXPECT_NE(execs.back().state, "running");
}

TEST(Lifecycle, BoxRootIsAnUnprivilegedHostUid) {
  ScopedBox a, b;
  std::string pid_a = trim(sh(a.id(), "sleep 60 >/dev/null 2>&1 & echo $!"));
  (void)pid_a;
  auto uids = [](const std::string& id) {
    std::set<uid_t> out;
    BoxRecord r = engine().get_box(id);
    std::string procs =
        read_file("/sys/fs/cgroup/unified/" + cgroup_group() + "/" + id + "/cgroup.procs");
    for (const auto& p : split(procs, '\n')) {
      struct stat st;
      if (!p.empty() && ::stat(("/proc/" + p).c_str(), &st) == 0) out.insert(st.st_uid);
    }
    return out;
  };
  auto ua = uids(a.id()), ub = uids(b.id());
  ASSERT_FALSE(ua.empty());
  for (uid_t u : ua) {
    EXPECT_GE(u, runtime::kUidBase);
  }
  for (uid_t u : ub) {
    EXPECT_EQ(ua.count(u), 0u) << "two boxes share host uid " << u;
  }
}

TEST(Lifecycle, UsageIsAccounted) {
  ScopedBox box;
  sh(box.id(),
     "python3 -c 'import time; t=time.time(); x=bytearray(64<<20)\nwhile time.time()-t<0.4: pass'");
  BoxUsage u = engine().usage(box.id());
  EXPECT_GE(u.cpu_us, 300'000u);
  EXPECT_GE(u.memory_peak, 64ull << 20);
  engine().stop_box(box.id(), 0);
  BoxUsage after = engine().usage(box.id());  // kept across the stop
  EXPECT_GE(after.cpu_us, u.cpu_us);
  EXPECT_GE(after.memory_peak, 64ull << 20);
  auto ev = engine().events(box.id());
  ASSERT_GE(ev.size(), 3u);
  EXPECT_EQ(ev.front().state, "creating");
  EXPECT_EQ(ev.back().state, "stopped");
}

// A box whose init dies while a change waits for the box's lock: the change finds it stopped
// (recorded so) instead of waiting for a lock it holds itself.
TEST(Lifecycle, InitDyingWhileAChangeWaitsForTheLock) {
  for (int which = 0; which < 2; which++) {
    ScopedBox box;
    std::optional<FileLock> held;
    held.emplace(home() + "/locks/box-" + box.id() + ".lock", 5000);
    std::string id = box.id();
    auto change = std::async(std::launch::async, [&, which] {
      return which == 0 ? engine().pause_box(id) : engine().resume_box(id);
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(300));  // it waits for the lock now
    ASSERT_EQ(::kill(box.rec.init_pid, SIGKILL), 0);
    for (int i = 0; i < 500 && process_matches(box.rec.init_pid, box.rec.init_start); i++)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    held.reset();
    ASSERT_EQ(change.wait_for(std::chrono::seconds(20)), std::future_status::ready)
        << "the change waited for its own lock";
    try {
      change.get();
      FAIL() << "changed a box whose init is gone";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Errc::failed_precondition) << e.what();
      EXPECT_NE(std::string(e.what()).find("stopped"), std::string::npos) << e.what();
    }
    BoxRecord now = engine().get_box(id);
    EXPECT_EQ(now.state, "stopped");
    EXPECT_EQ(now.state_reason, "box init exited unexpectedly");
  }
}

}  // namespace
}  // namespace upstream::testing
