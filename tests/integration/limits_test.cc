#include <signal.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <thread>

#include "common/error.h"
#include "common/fs.h"
#include "common/strings.h"
#include "harness.h"

namespace upstream::testing {
namespace {

TEST(Limits, MemoryHogIsKilledInsideTheBoxOnly) {
  BoxSpec s;
  s.limits.memory = 64ull << 20;
  ScopedBox box(s);
  Result r = run(box.id(), {"python3", "-c", "x = bytearray(256 << 20); print('survived')"});
  EXPECT_EQ(r.rec.signal, 9);
  EXPECT_TRUE(r.rec.oom_killed);
  EXPECT_EQ(r.rec.reason, "oom");
  EXPECT_EQ(r.out, "");
  // The box, its init, and the host are fine.
  EXPECT_EQ(engine().get_box(box.id()).state, "running");
  EXPECT_EQ(sh(box.id(), "echo still here"), "still here\n");
  EXPECT_GE(engine().usage(box.id()).oom_kills, 1u);
}

TEST(Limits, ForkBombHitsThePidsLimit) {
  BoxSpec s;
  s.limits.pids = 64;
  ScopedBox box(s);
  ExecSpec x;
  x.timeout_ms = 20000;
  // Forks until fork fails, reports how far it got, then everything exits.
  Result r = run(box.id(),
                 {"python3", "-c",
                  "import os, time\n"
                  "kids = []\n"
                  "try:\n"
                  "    for i in range(1000):\n"
                  "        pid = os.fork()\n"
                  "        if pid == 0:\n"
                  "            time.sleep(2); os._exit(0)\n"
                  "        kids.append(pid)\n"
                  "except OSError as e:\n"
                  "    print('fork failed after', len(kids), e.errno)\n"
                  "for k in kids: os.waitpid(k, 0)\n"},
                 x);
  EXPECT_EQ(r.code(), 0) << r.err;
  auto words = split(trim(r.out), ' ');
  ASSERT_EQ(words.size(), 5u) << r.out;
  EXPECT_LT(std::stoi(words[3]), 64);
  EXPECT_EQ(words[4], "11");  // EAGAIN
  EXPECT_EQ(sh(box.id(), "echo alive"), "alive\n");
}

TEST(Limits, DiskFillStopsAtTheLimit) {
  BoxSpec s;
  s.limits.disk = 128ull << 20;
  ScopedBox box(s);
  struct statvfs before;
  ASSERT_EQ(::statvfs(home().c_str(), &before), 0);
  Result r =
      run(box.id(), {"sh", "-c", "dd if=/dev/zero of=/home/user/fill bs=1M count=512 2>&1; sync"});
  EXPECT_NE(r.out.find("Disk quota exceeded"), std::string::npos) << r.out;
  std::string size = trim(sh(box.id(), "stat -c %s /home/user/fill"));
  EXPECT_LE(std::stoull(size), 128ull << 20);
  // Other boxes and the host still have room.
  ScopedBox other;
  EXPECT_EQ(sh(other.id(), "dd if=/dev/zero of=/tmp/x bs=1M count=32 2>/dev/null && echo ok"),
            "ok\n");
  struct statvfs after;
  ASSERT_EQ(::statvfs(home().c_str(), &after), 0);
  EXPECT_GT(static_cast<double>(after.f_bavail) * after.f_frsize, 1e9);
  // A full box still runs commands (its logs have space of their own), so it can clean up.
  EXPECT_EQ(sh(box.id(), "echo still works"), "still works\n");
  // Deleting frees the quota again.
  sh(box.id(), "rm /home/user/fill && sync");
  EXPECT_EQ(
      sh(box.id(), "dd if=/dev/zero of=/home/user/again bs=1M count=16 2>/dev/null && echo ok"),
      "ok\n");
}

// A box that filled its disk is still removed: deleting its nested logs volume writes to the
// full one, which the quota refused.
TEST(Limits, AFullBoxIsRemoved) {
  BoxSpec s;
  s.limits.disk = 64ull << 20;
  BoxRecord b = engine().create_box(s);
  run(b.id, {"sh", "-c", "dd if=/dev/zero of=/home/user/fill bs=1M count=256; sync"});
  EXPECT_NE(run(b.id, {"sh", "-c", "echo x > /home/user/more"}).err.find("Disk quota exceeded"),
            std::string::npos);
  engine().remove_box(b.id, true);
  EXPECT_FALSE(path_exists(home() + "/pool/boxes/" + b.id));
  EXPECT_THROW(engine().get_box(b.id), Error);
}

TEST(Limits, CpuQuotaThrottles) {
  BoxSpec s;
  s.limits.cpu_milli = 200;
  ScopedBox box(s);
  sh(box.id(), "timeout 1 sh -c 'while :; do :; done' || true");
  BoxUsage u = engine().usage(box.id());
  // One second of wall time at 0.2 CPUs: about 200 ms of CPU, never anywhere near a full second.
  EXPECT_LT(u.cpu_us, 450'000u);
  EXPECT_GT(u.cpu_us, 100'000u);
}

// free, /proc/meminfo, the CPU count readers use and uptime are the box's (LXCFS), not the host's.
TEST(Limits, TheBoxSeesItsOwnMemoryCpusAndUptime) {
  BoxSpec s;
  s.limits.memory = 256ull << 20;
  s.limits.cpu_milli = 500;
  ScopedBox box(s);
  EXPECT_EQ(sh(box.id(), "awk '/^MemTotal:/ {print $2}' /proc/meminfo"), "262144\n");
  EXPECT_EQ(sh(box.id(), "free -b | awk '/^Mem:/ {print $2}'"), "268435456\n");
  EXPECT_EQ(sh(box.id(), "grep -c ^processor /proc/cpuinfo"), "1\n");
  EXPECT_EQ(sh(box.id(), "python3 -c 'import os; print(os.cpu_count())'"), "1\n");
  EXPECT_EQ(sh(box.id(), "cat /sys/devices/system/cpu/online"), "0\n");
  EXPECT_LT(std::stod(sh(box.id(), "cut -d' ' -f1 /proc/uptime")), 60.0);
  // Read-only, as the kernel's are.
  EXPECT_NE(run(box.id(), {"sh", "-c", "echo x > /proc/meminfo"}).code(), 0);

  BoxSpec two;
  two.limits.memory = 1ull << 30;
  two.limits.cpu_milli = 2000;
  ScopedBox other(two);
  EXPECT_EQ(sh(other.id(), "awk '/^MemTotal:/ {print $2}' /proc/meminfo"), "1048576\n");
  EXPECT_EQ(sh(other.id(), "python3 -c 'import os; print(os.cpu_count())'"),
            std::to_string(std::min(2u, std::thread::hardware_concurrency())) + "\n");
}

// A kill -9 of the LXCFS daemon leaves a dead mount; the next box start replaces it.
TEST(Limits, TheProcViewComesBackAfterItsDaemonIsKilled) {
  {
    BoxSpec s;
    s.limits.memory = 128ull << 20;
    ScopedBox box(s);  // the view serves
    ASSERT_EQ(sh(box.id(), "awk '/^MemTotal:/ {print $2}' /proc/meminfo"), "131072\n");
  }
  std::string pid = trim(read_file("/run/upstream/lxcfs.pid"));
  ASSERT_EQ(::kill(std::stoi(pid), SIGKILL), 0);
  for (int i = 0; i < 200 && ::kill(std::stoi(pid), 0) == 0; i++) ::usleep(5000);
  BoxSpec s;
  s.limits.memory = 192ull << 20;
  ScopedBox box(s);
  EXPECT_EQ(sh(box.id(), "awk '/^MemTotal:/ {print $2}' /proc/meminfo"), "196608\n");
  EXPECT_NE(trim(read_file("/run/upstream/lxcfs.pid")), pid);
}

}  // namespace
}  // namespace upstream::testing
