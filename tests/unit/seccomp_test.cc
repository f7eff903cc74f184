#include "runtime/seccomp.h"

#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

namespace upstream::runtime {
namespace {

// Runs `probe` in a child under the default filter; returns the errno it reports (0: success).
int under_filter(int (*probe)()) {
  int p[2];
  EXPECT_EQ(::pipe(p), 0);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(p[0]);
    const std::string& bpf = default_seccomp_bpf();
    sock_fprog prog{static_cast<unsigned short>(bpf.size() / sizeof(sock_filter)),
                    reinterpret_cast<sock_filter*>(const_cast<char*>(bpf.data()))};
    ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    if (::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0) _exit(99);
    int err = probe();
    (void)!::write(p[1], &err, sizeof err);
    _exit(0);
  }
  ::close(p[1]);
  int err = -1;
  EXPECT_EQ(::read(p[0], &err, sizeof err), static_cast<ssize_t>(sizeof err));
  ::close(p[0]);
  int st;
  ::waitpid(pid, &st, 0);
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  return err;
}

int result(long rc) { return rc < 0 ? errno : 0; }

TEST(Seccomp, EmbeddedFilterIsTheCompiledProfile) {
  const std::string& bpf = default_seccomp_bpf();
  EXPECT_GT(bpf.size(), 100 * sizeof(sock_filter));
  EXPECT_EQ(bpf.size() % sizeof(sock_filter), 0u);
  EXPECT_EQ(bpf, compile_default_seccomp());
}

TEST(Seccomp, OrdinaryCallsWork) {
  EXPECT_EQ(under_filter([] { return result(::getpid()); }), 0);
  EXPECT_EQ(under_filter([] { return result(::socket(AF_INET, SOCK_STREAM, 0)); }), 0);
  EXPECT_EQ(under_filter([] { return result(::socket(AF_UNIX, SOCK_STREAM, 0)); }), 0);
  EXPECT_EQ(under_filter([] {
              pid_t c = ::fork();  // plain clone without namespace flags
              if (c == 0) _exit(0);
              int st;
              return result(::waitpid(c, &st, 0));
            }),
            0);
}

TEST(Seccomp, DangerousCallsAreRefused) {
  EXPECT_EQ(under_filter([] { return result(::mount("none", "/mnt", "tmpfs", 0, nullptr)); }),
            EPERM);
  EXPECT_EQ(under_filter([] { return result(::umount2("/", MNT_DETACH)); }), EPERM);
  EXPECT_EQ(under_filter([] { return result(::unshare(CLONE_NEWUSER)); }), EPERM);
  EXPECT_EQ(under_filter([] { return result(::unshare(CLONE_NEWNS)); }), EPERM);
  EXPECT_EQ(under_filter([] { return result(::syscall(SYS_setns, 0, 0)); }), EPERM);
  EXPECT_EQ(under_filter(
                [] { return result(::syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0)); }),
            EPERM);
  EXPECT_EQ(under_filter([] { return result(::syscall(SYS_clone3, nullptr, 0)); }), ENOSYS);
  EXPECT_EQ(under_filter([] { return result(::syscall(SYS_keyctl, 0, 0, 0, 0, 0)); }), EPERM);
  EXPECT_EQ(under_filter([] { return result(::syscall(SYS_add_key, "user", "x", "y", 1, 0)); }),
            EPERM);
  EXPECT_EQ(under_filter([] { return result(::syscall(SYS_bpf, 0, nullptr, 0)); }), EPERM);
  EXPECT_EQ(
      under_filter([] { return result(::syscall(SYS_perf_event_open, nullptr, 0, -1, -1, 0)); }),
      EPERM);
  EXPECT_EQ(under_filter([] { return result(::syscall(SYS_init_module, nullptr, 0, "")); }), EPERM);
  EXPECT_EQ(under_filter([] { return result(::syscall(SYS_finit_module, -1, "", 0)); }), EPERM);
  EXPECT_EQ(under_filter([] { return result(::syscall(SYS_kexec_load, 0, 0, nullptr, 0)); }),
            EPERM);
  EXPECT_EQ(under_filter([] { return result(::syscall(SYS_open_by_handle_at, -1, nullptr, 0)); }),
            EPERM);
  EXPECT_EQ(under_filter([] { return result(::syscall(SYS_io_uring_setup, 1, nullptr)); }), EPERM);
  EXPECT_EQ(under_filter([] { return result(::syscall(SYS_reboot, 0, 0, 0, nullptr)); }), EPERM);
  EXPECT_EQ(under_filter([] { return result(::syscall(SYS_open_tree, -1, "/", 0)); }), EPERM);
  EXPECT_EQ(under_filter([] { return result(::socket(40 /* AF_VSOCK */, SOCK_STREAM, 0)); }),
            EPERM);
  EXPECT_EQ(under_filter([] { return result(::socket(38 /* AF_ALG */, SOCK_SEQPACKET, 0)); }),
            EPERM);
  EXPECT_EQ(under_filter([] {
              return result(::syscall(SYS_personality, 0x0040000 /* ADDR_NO_RANDOMIZE */));
            }),
            EPERM);
}

}  // namespace
}  // namespace upstream::runtime
