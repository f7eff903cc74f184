#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include "common/error.h"
#include "common/fd.h"
#include "common/strings.h"
#include "harness.h"

namespace upstream::testing {
namespace {

class Exec : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { box_ = new ScopedBox(); }
  static void TearDownTestSuite() {
    delete box_;
    box_ = nullptr;
  }
  static const std::string& id() { return box_->id(); }
  static ScopedBox* box_;
};
ScopedBox* Exec::box_ = nullptr;

TEST_F(Exec, ArgvShellAndExitCodes) {
  Result r = run(id(), {"echo", "a b", "$HOME"});
  EXPECT_EQ(r.out, "a b $HOME\n");
  EXPECT_EQ(r.code(), 0);
  EXPECT_EQ(run(id(), {"sh", "-c", "exit 7"}).code(), 7);
  ExecSpec s;
  s.shell = "echo $0; [[ 1 == 1 ]] && echo bash";  // shell strings run in bash
  Result b = run(id(), {}, s);
  EXPECT_EQ(b.out, "/bin/bash\nbash\n");
}

TEST_F(Exec, StdoutAndStderrStayApart) {
  Result r = run(id(), {"sh", "-c", "echo out; echo err >&2; echo out2; echo err2 >&2"});
  EXPECT_EQ(r.out, "out\nout2\n");
  EXPECT_EQ(r.err, "err\nerr2\n");
  EXPECT_EQ(r.rec.stdout_tail, "out\nout2\n");
  EXPECT_EQ(r.rec.stderr_tail, "err\nerr2\n");
  auto rec = engine().get_exec(id(), r.rec.seq);
  ASSERT_TRUE(rec);
  EXPECT_EQ(rec->stdout_bytes, 9u);
}

TEST_F(Exec, EnvCwdAndUser) {
  ExecSpec s;
  s.env = {"A=1", "B=two words"};
  s.cwd = "/tmp";
  Result r = run(id(), {"sh", "-c", "echo $A $B; pwd; id -u; echo $HOME"}, s);
  EXPECT_EQ(r.out, "1 two words\n/tmp\n0\n/root\n");
  s = {};
  s.user = "user";
  r = run(id(), {"sh", "-c", "id -u; id -g; echo $HOME $USER; touch /etc/x 2>&1 || true"}, s);
  EXPECT_EQ(r.out.substr(0, r.out.find("touch")), "1000\n1000\n/home/user user\n");
  EXPECT_NE(r.out.find("Permission denied"), std::string::npos);
  s.user = "nosuchuser";
  EXPECT_THROW(run(id(), {"true"}, s), Error);
}

TEST_F(Exec, CommandsThatCannotStart) {
  Result r = run(id(), {"definitely-not-a-command"});
  EXPECT_EQ(r.code(), 127);
  EXPECT_NE(r.err.find("No such file or directory"), std::string::npos);
  EXPECT_EQ(r.rec.state, "failed");
  ExecSpec s;
  s.cwd = "/does/not/exist";
  r = run(id(), {"true"}, s);
  EXPECT_EQ(r.code(), 126);
  EXPECT_NE(r.err.find("/does/not/exist"), std::string::npos);
  EXPECT_EQ(run(id(), {"/etc/hostname"}).code(), 126);  // not executable
}

TEST_F(Exec, SignalsAndStdin) {
  Result r = run(id(), {"sh", "-c", "kill -TERM $$"});
  EXPECT_EQ(r.rec.signal, SIGTERM);
  EXPECT_EQ(r.code(), 128 + SIGTERM);

  ExecSpec s;
  s.stdin = true;
  s.argv = {"sh", "-c", "tr a-z A-Z; echo done"};
  auto x = engine().start_exec(id(), s);
  write_all(x->stdin_fd(), "hello\nworld\n");
  x->close_stdin();
  std::string out;
  ExecRecord rec = x->wait([&](Stream st, std::string_view d) {
    if (st == Stream::stdout_) out.append(d);
  });
  EXPECT_EQ(out, "HELLO\nWORLD\ndone\n");
  EXPECT_EQ(rec.exit_code, 0);
}

TEST_F(Exec, TimeoutKillsTheWholeTree) {
  ExecSpec s;
  s.timeout_ms = 500;
  auto t0 = std::chrono::steady_clock::now();
  Result r = run(id(), {"sh", "-c", "sleep 60 & setsid sleep 61 & sleep 62"}, s);
  auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)
          .count();
  EXPECT_TRUE(r.rec.timed_out);
  EXPECT_EQ(r.code(), 124);
  EXPECT_LT(ms, 5000);
  EXPECT_EQ(sh(id(), "ps -eo args= | grep -c '^sleep 6' || true"), "0\n");
}

TEST_F(Exec, KillTakesEverythingTheExecStarted) {
  ExecSpec s;
  s.shell =
      "sleep 300 & (setsid sh -c 'sleep 301 & sleep 302') & nohup sleep 303 >/dev/null 2>&1 & wait";
  s.background = true;
  auto x = engine().start_exec(id(), s);
  uint64_t seq = x->seq();
  for (int i = 0; i < 50 && sh(id(), "ps -eo args= | grep -c '^sleep 30' || true") != "4\n"; i++)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(sh(id(), "ps -eo args= | grep -c '^sleep 30' || true"), "4\n");
  engine().kill_exec(id(), seq, SIGKILL);
  for (int i = 0; i < 100 && engine().get_exec(id(), seq)->state == "running"; i++)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(sh(id(), "ps -eo args= | grep -c '^sleep 30' || true"), "0\n");
  auto rec = engine().get_exec(id(), seq);
  EXPECT_EQ(rec->state, "exited");
  EXPECT_EQ(rec->reason, "killed");
  EXPECT_THROW(engine().kill_exec(id(), seq, SIGKILL), Error);  // already over
}

TEST_F(Exec, WhatAFinishedExecLeftRunningCanStillBeKilled) {
  // The exec ends at once; its daemonised child lives on in the exec's group.
  Result r = run(id(), {"sh", "-c", "setsid sleep 310 >/dev/null 2>&1 < /dev/null & echo started"});
  ASSERT_EQ(r.out, "started\n");
  size_t left = 0;
  for (const auto& p : engine().exec_processes(id()))
    if (p.seq == r.rec.seq) {
      EXPECT_FALSE(p.running);
      left = p.processes;
    }
  EXPECT_EQ(left, 1u);
  engine().kill_exec(id(), r.rec.seq, SIGKILL);
  for (int i = 0; i < 100 && sh(id(), "ps -eo args= | grep -c '^sleep 310' || true") != "0\n"; i++)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(sh(id(), "ps -eo args= | grep -c '^sleep 310' || true"), "0\n");
  EXPECT_THROW(engine().kill_exec(id(), r.rec.seq, SIGKILL), Error);  // nothing left now
}

TEST_F(Exec, BackgroundExecsKeepLogsAndStatus) {
  ExecSpec s;
  s.shell = "for i in 1 2 3; do echo line $i; sleep 0.05; done; echo warn >&2; exit 3";
  s.background = true;
  auto x = engine().start_exec(id(), s);
  uint64_t seq = x->seq();
  x.reset();
  auto running = engine().list_execs(id(), true);
  bool found = false;
  for (const auto& e : running) found |= e.seq == seq;
  EXPECT_TRUE(found);
  std::optional<ExecRecord> rec;
  for (int i = 0; i < 200; i++) {
    rec = engine().get_exec(id(), seq);
    if (rec->state != "running") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(rec->state, "exited");
  EXPECT_EQ(rec->exit_code, 3);
  EXPECT_EQ(rec->stdout_tail, "line 1\nline 2\nline 3\n");
  EXPECT_EQ(rec->stderr_tail, "warn\n");
  auto [out, err] = engine().exec_log_paths(id(), seq);
  EXPECT_EQ(read_file(out), "line 1\nline 2\nline 3\n");
}

TEST_F(Exec, LeftoverChildrenDoNotHoldTheCallerUp) {
  auto t0 = std::chrono::steady_clock::now();
  Result r = run(id(), {"sh", "-c", "sleep 30 & echo parent done"});
  auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)
          .count();
  EXPECT_EQ(r.out, "parent done\n");
  EXPECT_LT(ms, 5000);
  sh(id(), "pkill -x sleep || true");
}

TEST_F(Exec, LargeOutputIsStreamedAndBounded) {
  Result r = run(id(), {"sh", "-c", "head -c 8000000 /dev/zero | tr '\\0' x"});
  EXPECT_EQ(r.out.size(), 8'000'000u);
  EXPECT_EQ(r.rec.stdout_bytes, 8'000'000u);
  EXPECT_EQ(r.rec.stdout_tail.size(), 64u * 1024);  // the database keeps a bounded tail
  auto [out, err] = engine().exec_log_paths(id(), r.rec.seq);
  struct stat st;
  ASSERT_EQ(::stat(out.c_str(), &st), 0);
  EXPECT_EQ(st.st_size, 8'000'000);  // the full log is on disk
}

TEST_F(Exec, Terminal) {
  ExecSpec s;
  s.tty = true;
  s.rows = 33;
  s.cols = 101;
  s.argv = {"sh", "-c", "tty; stty size; echo $TERM; test -t 0 && echo interactive"};
  auto x = engine().start_exec(id(), s);
  std::string out;
  ExecRecord rec = x->wait([&](Stream, std::string_view d) { out.append(d); });
  EXPECT_EQ(rec.exit_code, 0);
  EXPECT_NE(out.find("/dev/pts/"), std::string::npos) << out;
  EXPECT_NE(out.find("33 101"), std::string::npos) << out;
  EXPECT_NE(out.find("xterm-256color"), std::string::npos);
  EXPECT_NE(out.find("interactive"), std::string::npos);
}

TEST_F(Exec, ManyAtOnceInOneBoxAndAcrossBoxes) {
  ScopedBox other;
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 16; i++) {
    threads.emplace_back([&, i] {
      const std::string& box = i % 2 ? id() : other.id();
      Result r = run(box, {"sh", "-c", "sleep 0.2; echo " + std::to_string(i)});
      if (r.code() == 0 && r.out == std::to_string(i) + "\n") ok++;
    });
  }
  auto t0 = std::chrono::steady_clock::now();
  for (auto& t : threads) t.join();
  auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)
          .count();
  EXPECT_EQ(ok.load(), 16);
  EXPECT_LT(ms, 16 * 200);  // they ran concurrently, not one after another
}

}  // namespace
}  // namespace upstream::testing
