#include "runtime/userns.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "common/error.h"

namespace upstream::runtime {

namespace {

struct Gate {
  int read_end;
  int write_end;
};

int hold(void* arg) {
  auto* g = static_cast<Gate*>(arg);
  // Every descriptor but our end of the gate goes: our copy of its write end would keep the pipe
  // open forever, and so would copies of other threads' gates (boxes are created in parallel).
  int keep = g->read_end;
  if (keep > 0) ::syscall(SYS_close_range, 0u, static_cast<unsigned>(keep - 1), 0u);
  ::syscall(SYS_close_range, static_cast<unsigned>(keep + 1), ~0u, 0u);
  char c;
  // Parked until the parent has written our maps and opened our namespace.
  while (::read(g->read_end, &c, 1) < 0 && errno == EINTR) {
  }
  return 0;
}

void write_map(pid_t pid, const char* file, const std::string& map) {
  std::string path = "/proc/" + std::to_string(pid) + "/" + file;
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) throw_sys("open " + path);
  if (::write(fd.get(), map.data(), map.size()) != static_cast<ssize_t>(map.size()))
    throw_sys("write " + path);
}

}  // namespace

UniqueFd make_userns(uint32_t base, uint32_t count) {
  Pipe gate = make_pipe(O_CLOEXEC);
  Gate g{gate.read.get(), gate.write.get()};
  constexpr size_t kStack = 64 * 1024;
  void* stack = ::mmap(nullptr, kStack, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
  if (stack == MAP_FAILED) throw_sys("mmap");
  pid_t pid =
      ::clone(hold, static_cast<char*>(stack) + kStack, CLONE_VM | CLONE_NEWUSER | SIGCHLD, &g);
  if (pid < 0) {
    int err = errno;
    ::munmap(stack, kStack);
    throw_sys(Errc::unavailable, "create user namespace", err);
  }
  UniqueFd ns;
  std::string error;
  try {
    std::string map = "0 " + std::to_string(base) + " " + std::to_string(count) + "\n";
    write_map(pid, "uid_map", map);
    write_map(pid, "gid_map", map);
    std::string path = "/proc/" + std::to_string(pid) + "/ns/user";
    ns.reset(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!ns) throw_sys("open " + path);
  } catch (const Error& e) {
    error = e.what();
  }
  gate.write.reset();
  int status;
  while (::waitpid(pid, &status, __WALL) < 0 && errno == EINTR) {
  }
  ::munmap(stack, kStack);
  if (!error.empty()) throw Error(Errc::unavailable, error);
  return ns;
}

}  // namespace upstream::runtime
