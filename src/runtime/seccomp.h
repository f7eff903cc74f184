// The default seccomp profile for box processes, modelled on Docker's: an allowlist of the
// system calls ordinary programs use; everything else fails with EPERM. Namespaces, mounts,
// kernel modules, kexec, BPF, perf, keyrings, handle-based opens, io_uring and the like are
// refused; clone is allowed only without namespace flags, clone3 reports ENOSYS so libc falls
// back to clone; sockets of the vsock and AF_ALG families are refused.
#pragma once

#include <string>
#include <vector>

namespace upstream::runtime {

// The filter as a raw array of struct sock_filter, ready for seccomp(2). It is compiled when
// upstream is built (compiling takes ~17 ms, longer than starting a box) and embedded.
const std::string& default_seccomp_bpf();

// Compiles the profile with libseccomp (used by the build, and by tests to check the embedded
// filter is current).
std::string compile_default_seccomp();

// For tests and documentation.
const std::vector<const char*>& seccomp_allowed_syscalls();

}  // namespace upstream::runtime
