#include "init/spawn.h"

#include <fcntl.h>
#include <grp.h>
#include <linux/close_range.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/error.h"

namespace upstream::init {

namespace {

enum Stage { kOk = 0, kCgroup, kStdio, kTty, kIdentity, kCwd, kExec };

struct Plan {
  char* const* argv;
  char* const* envp;
  const char* path;  // PATH value used to search argv[0]
  const char* cwd;
  uid_t uid;
  gid_t gid;
  const gid_t* groups;
  size_t ngroups;
  int stdio[3];
  int tty_fd;
  int cgroup_procs_fd;
  int exec_fd;
  unsigned long nofile_soft;
  // Written by the child on failure; read by the parent once the child is gone.
  volatile int stage;
  volatile int err;
};

[[noreturn]] void fail(Plan* p, Stage s) {
  p->err = errno;
  p->stage = s;
  _exit(127);
}

int child_main(void* arg) {
  Plan* p = static_cast<Plan*>(arg);
  if (p->cgroup_procs_fd >= 0 && ::write(p->cgroup_procs_fd, "0", 1) != 1) fail(p, kCgroup);

  // The init installs no signal handlers and ignores nothing, so exec resets all there is to
  // reset; only the mask (all blocked, for its signalfd) must be cleared.
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);

  ::setsid();
  if (p->tty_fd >= 0) {
    if (::ioctl(p->tty_fd, TIOCSCTTY, 0) != 0) fail(p, kTty);
    for (int i = 0; i < 3; i++)
      if (::dup2(p->tty_fd, i) < 0) fail(p, kTty);
  } else {
    for (int i = 0; i < 3; i++)
      if (::dup2(p->stdio[i], i) < 0) fail(p, kStdio);
  }

  if (p->nofile_soft) {
    rlimit lim;
    if (::getrlimit(RLIMIT_NOFILE, &lim) == 0 && p->nofile_soft < lim.rlim_cur) {
      lim.rlim_cur = p->nofile_soft;
      ::setrlimit(RLIMIT_NOFILE, &lim);
    }
  }
  if (::setgroups(p->ngroups, p->groups) != 0) fail(p, kIdentity);
  if (::setresgid(p->gid, p->gid, p->gid) != 0) fail(p, kIdentity);
  if (::setresuid(p->uid, p->uid, p->uid) != 0) fail(p, kIdentity);
  if (::chdir(p->cwd) != 0) fail(p, kCwd);

  ::syscall(SYS_close_range, 3u, ~0u, CLOSE_RANGE_CLOEXEC);
  // The seccomp filter and no_new_privs are inherited from the init, which installed them once.

  if (p->exec_fd >= 0) {
    ::syscall(SYS_execveat, p->exec_fd, "", p->argv, p->envp, AT_EMPTY_PATH);
    fail(p, kExec);
  }
  const char* file = p->argv[0];
  if (std::strchr(file, '/')) {
    ::execve(file, p->argv, p->envp);
    fail(p, kExec);
  }
  // PATH search as execvpe does it, but with the command's own PATH and without allocating.
  char buf[4096];
  bool saw_eacces = false;
  const char* dir = p->path;
  size_t flen = std::strlen(file);
  for (;;) {
    const char* end = std::strchr(dir, ':');
    size_t dlen = end ? static_cast<size_t>(end - dir) : std::strlen(dir);
    if (dlen + flen + 2 <= sizeof buf) {
      size_t n = 0;
      if (dlen == 0) {
        buf[n++] = '.';
      } else {
        std::memcpy(buf, dir, dlen);
        n = dlen;
      }
      buf[n++] = '/';
      std::memcpy(buf + n, file, flen + 1);
      ::execve(buf, p->argv, p->envp);
      if (errno == EACCES)
        saw_eacces = true;
      else if (errno != ENOENT && errno != ENOTDIR)
        fail(p, kExec);
    }
    if (!end) break;
    dir = end + 1;
  }
  errno = saw_eacces ? EACCES : ENOENT;
  fail(p, kExec);
}

alignas(64) char g_stack[128 * 1024];

}  // namespace

SpawnResult spawn(const SpawnRequest& req, int devnull_fd) {
  std::vector<char*> argv, envp;
  for (const auto& a : req.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const char* path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  for (const auto& e : req.env) {
    envp.push_back(const_cast<char*>(e.c_str()));
    if (e.compare(0, 5, "PATH=") == 0) path = e.c_str() + 5;
  }
  envp.push_back(nullptr);

  Plan plan{};
  plan.argv = argv.data();
  plan.envp = envp.data();
  plan.path = path;
  plan.cwd = req.cwd.c_str();
  plan.uid = req.uid;
  plan.gid = req.gid;
  plan.groups = req.groups.data();
  plan.ngroups = req.groups.size();
  for (int i = 0; i < 3; i++) plan.stdio[i] = req.stdio[i] >= 0 ? req.stdio[i] : devnull_fd;
  plan.tty_fd = req.tty_fd;
  plan.cgroup_procs_fd = req.cgroup_procs_fd;
  plan.exec_fd = req.exec_fd;
  plan.nofile_soft = req.nofile_soft;
  plan.stage = kOk;

  pid_t pid =
      ::clone(child_main, g_stack + sizeof g_stack, CLONE_VM | CLONE_VFORK | SIGCHLD, &plan);
  SpawnResult r;
  if (pid < 0) {
    r.err = errno;
    r.message = "cannot start process: " + errno_string(errno);
    r.exit_code = 126;
    return r;
  }
  if (plan.stage == kOk) {
    r.pid = pid;
    return r;
  }
  // The child failed before exec and has exited; collect it here so it never looks like an exec.
  int status;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  r.err = plan.err;
  const std::string e = errno_string(plan.err);
  switch (plan.stage) {
    case kCgroup:
      r.message = "cannot place process in its cgroup: " + e;
      r.exit_code = 126;
      break;
    case kStdio:
      r.message = "cannot set up standard streams: " + e;
      r.exit_code = 126;
      break;
    case kTty:
      r.message = "cannot attach terminal: " + e;
      r.exit_code = 126;
      break;
    case kIdentity:
      r.message = "cannot switch to uid " + std::to_string(req.uid) + ": " + e;
      r.exit_code = 126;
      break;
    case kCwd:
      r.message = "working directory " + req.cwd + ": " + e;
      r.exit_code = 126;
      break;
    default:
      r.message = req.argv.empty() ? "exec: " + e : req.argv[0] + ": " + e;
      r.exit_code = (plan.err == ENOENT || plan.err == ENOTDIR) ? 127 : 126;
  }
  return r;
}

}  // namespace upstream::init
