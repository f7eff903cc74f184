#include "runtime/spawn.h"

#include <fcntl.h>
#include <linux/close_range.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/error.h"
#include "common/ipc.h"
#include "common/proc.h"

namespace upstream::runtime {

namespace {

struct ChildArgs {
  const char* init_path;
  char* const* argv;
  int procs_fds[8];
  int nprocs;
  int ctl_fd;
  int userns_fd;
  int slot_fd;
  int devnull_fd;
  volatile int err;
  volatile int stage;
};

[[noreturn]] void child_fail(ChildArgs* a, int stage) {
  a->err = errno;
  a->stage = stage;
  _exit(127);
}

// Runs in the new namespaces, sharing the parent's memory until exec.
int child_main(void* arg) {
  auto* a = static_cast<ChildArgs*>(arg);
  for (int i = 0; i < a->nprocs; i++)
    if (::write(a->procs_fds[i], "0", 1) != 1) child_fail(a, 1);
  // The cgroup namespace is rooted at the box's cgroups, now that we are in them.
  if (::unshare(CLONE_NEWCGROUP) != 0) child_fail(a, 2);
  ::setsid();
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  for (int s = 1; s < NSIG; s++) ::sigaction(s, &dfl, nullptr);
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  // Move the descriptors the init expects out of the way first, then into place.
  int ctl = ::fcntl(a->ctl_fd, F_DUPFD, 16);
  int uns = ::fcntl(a->userns_fd, F_DUPFD, 16);
  int slot = ::fcntl(a->slot_fd, F_DUPFD, 16);
  if (ctl < 0 || uns < 0 || slot < 0) child_fail(a, 3);
  if (::dup2(a->devnull_fd, 0) < 0 || ::dup2(a->devnull_fd, 1) < 0 ||
      ::dup2(a->devnull_fd, 2) < 0 || ::dup2(ctl, 3) < 0 || ::dup2(uns, 4) < 0 ||
      ::dup2(slot, 5) < 0)
    child_fail(a, 3);
  // Nothing else the caller holds may reach the box: a server's listening socket, a client
  // connection, a database. Whatever a library opened without O_CLOEXEC is closed at exec.
  if (::syscall(SYS_close_range, 6u, ~0u, CLOSE_RANGE_CLOEXEC) != 0) child_fail(a, 3);
  char* envp[] = {nullptr};
  ::execve(a->init_path, a->argv, envp);
  child_fail(a, 4);
}

}  // namespace

InitProcess spawn_init(const InitSpawn& spec) {
  auto [ctl_parent, ctl_child] = ipc::socketpair();
  UniqueFd devnull = open_or_throw("/dev/null", O_RDWR);
  std::vector<UniqueFd> procs;
  for (const auto& p : spec.cgroup_procs) procs.push_back(open_or_throw(p, O_WRONLY));
  if (procs.size() > 8) throw Error("too many cgroup hierarchies");

  std::string arg0 = "upstream-init", arg1 = spec.box_id;
  char* argv[] = {arg0.data(), arg1.data(), nullptr};
  ChildArgs a{};
  a.init_path = spec.init_path.c_str();
  a.argv = argv;
  a.nprocs = static_cast<int>(procs.size());
  for (size_t i = 0; i < procs.size(); i++) a.procs_fds[i] = procs[i].get();
  a.ctl_fd = ctl_child.get();
  a.userns_fd = spec.userns_fd;
  a.slot_fd = spec.slot_lock_fd;
  a.devnull_fd = devnull.get();

  constexpr size_t kStack = 64 * 1024;
  void* stack = ::mmap(nullptr, kStack, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
  if (stack == MAP_FAILED) throw_sys("mmap");
  int flags = CLONE_VM | CLONE_VFORK | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC |
              CLONE_NEWNET | SIGCHLD;
  pid_t pid = ::clone(child_main, static_cast<char*>(stack) + kStack, flags, &a);
  int clone_err = errno;
  ::munmap(stack, kStack);
  if (pid < 0) throw_sys(Errc::unavailable, "create box namespaces", clone_err);
  ctl_child.reset();

  auto reap = [&]() {
    ::kill(pid, SIGKILL);
    int st;
    while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
  };
  if (a.stage != 0) {
    int err = a.err;
    reap();
    const char* what = a.stage == 1   ? "join box cgroups"
                       : a.stage == 2 ? "create cgroup namespace"
                       : a.stage == 3 ? "set up init descriptors"
                                      : "execute the box init";
    throw_sys(Errc::unavailable, what, err);
  }

  nlohmann::json timings;
  try {
    ipc::send(ctl_parent.get(), spec.config);
    for (;;) {
      auto reply = ipc::recv_wait(ctl_parent.get(), spec.timeout_ms);
      if (!reply) throw Error(Errc::internal, "the box init exited during start-up");
      const auto& b = reply->body;
      if (b.value("phase", "") == "namespaces") {
        if (spec.attach_network) spec.attach_network(pid);
        ipc::send(ctl_parent.get(), {{"go", true}});
        continue;
      }
      if (b.contains("timings_us")) timings = b["timings_us"];
      if (!b.value("ok", false)) {
        std::string msg = b.value("error", std::string("box init failed"));
        Errc code = b.value("kind", "") == "unavailable" ? Errc::unavailable : Errc::internal;
        throw Error(code, msg, b.value("errno", 0));
      }
      break;
    }
  } catch (...) {
    reap();
    throw;
  }
  InitProcess out;
  out.pid = pid;
  out.start_time = process_start_time(pid).value_or(0);
  out.timings_us = timings;
  return out;
}

}  // namespace upstream::runtime
