#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <unistd.h>
#include <cstring>

#include <gtest/gtest.h>

#include "common/error.h"
#include "common/fd.h"
#include "common/frame.h"
#include "common/ipc.h"

namespace upstream {
namespace {

TEST(Ipc, MessageWithDescriptors) {
  auto [a, b] = ipc::socketpair();
  Pipe p = make_pipe(O_CLOEXEC);
  ipc::send(a.get(), {{"op", "exec"}, {"n", 42}}, {p.write.get()});
  auto m = ipc::recv(b.get());
  ASSERT_TRUE(m);
  EXPECT_EQ(m->body["op"], "exec");
  EXPECT_EQ(m->body["n"], 42);
  ASSERT_EQ(m->fds.size(), 1u);
  // The received descriptor is the same pipe: what we write arrives at the read end.
  write_all(m->fds[0].get(), "hi");
  char buf[2];
  ASSERT_EQ(::read(p.read.get(), buf, 2), 2);
  EXPECT_EQ(std::string(buf, 2), "hi");
  // Received descriptors are close-on-exec.
  EXPECT_TRUE(::fcntl(m->fds[0].get(), F_GETFD) & FD_CLOEXEC);
}

TEST(Ipc, EndOfStreamAndGarbage) {
  auto [a, b] = ipc::socketpair();
  ASSERT_EQ(::send(a.get(), "not json", 8, 0), 8);
  EXPECT_THROW(ipc::recv(b.get()), Error);
  ASSERT_EQ(::send(a.get(), "[1,2]", 5, 0), 5);
  EXPECT_THROW(ipc::recv(b.get()), Error);
  a.reset();
  EXPECT_FALSE(ipc::recv(b.get()).has_value());
}

TEST(Ipc, WaitTimesOut) {
  auto [a, b] = ipc::socketpair();
  try {
    ipc::recv_wait(b.get(), 20);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::timeout);
  }
}

TEST(Ipc, SendToClosedPeerIsUnavailable) {
  auto [a, b] = ipc::socketpair();
  b.reset();
  try {
    ipc::send(a.get(), {{"x", 1}});
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::unavailable);
  }
}

TEST(Ipc, ConnectToLongPath) {
  // Paths beyond sun_path's 108 bytes are reached through a directory descriptor.
  std::string dir =
      "/tmp/upstream-ipc-test-" + std::to_string(::getpid()) + "/" + std::string(100, 'd');
  ASSERT_EQ(::system(("mkdir -p " + dir).c_str()), 0);
  std::string path = dir + "/s.sock";
  int s = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  ASSERT_GE(s, 0);
  UniqueFd server(s);
  ASSERT_EQ(::chdir(dir.c_str()), 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strcpy(addr.sun_path, "s.sock");
  ASSERT_EQ(::bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(s, 1), 0);
  ASSERT_EQ(::chdir("/"), 0);
  UniqueFd c = ipc::connect(path);
  UniqueFd accepted(::accept(s, nullptr, nullptr));
  ipc::send(c.get(), {{"hello", true}});
  EXPECT_EQ(ipc::recv(accepted.get())->body["hello"], true);
  ::system(("rm -rf /tmp/upstream-ipc-test-" + std::to_string(::getpid())).c_str());
  EXPECT_THROW(ipc::connect(path), Error);
}

TEST(Frame, HeaderThenPayload) {
  Pipe p = make_pipe(O_CLOEXEC);
  frame::write_header(p.write.get(), {{"data", 3}});
  write_all(p.write.get(), "abc");
  frame::write_header(p.write.get(), {{"end", true}});
  p.write.reset();
  auto h = frame::read_header(p.read.get());
  ASSERT_TRUE(h);
  EXPECT_EQ((*h)["data"], 3);
  char buf[3];
  frame::read_exact(p.read.get(), buf, 3);
  EXPECT_EQ(std::string(buf, 3), "abc");
  EXPECT_EQ((*frame::read_header(p.read.get()))["end"], true);
  EXPECT_FALSE(frame::read_header(p.read.get()).has_value());
}

TEST(Frame, TruncatedAndOversized) {
  {
    Pipe p = make_pipe(O_CLOEXEC);
    write_all(p.write.get(), std::string("\x05\x00", 2));
    p.write.reset();
    EXPECT_THROW(frame::read_header(p.read.get()), Error);
  }
  {
    Pipe p = make_pipe(O_CLOEXEC);
    write_all(p.write.get(), std::string("\xff\xff\xff\x7f", 4));
    p.write.reset();
    EXPECT_THROW(frame::read_header(p.read.get()), Error);
  }
  {
    Pipe p = make_pipe(O_CLOEXEC);
    write_all(p.write.get(), std::string("\x04\x00\x00\x00nope", 8));
    p.write.reset();
    EXPECT_THROW(frame::read_header(p.read.get()), Error);
  }
}

TEST(Files, AtomicWriteReplaces) {
  std::string path = "/tmp/upstream-atomic-" + std::to_string(::getpid());
  write_file_atomic(path, "one", 0600);
  write_file_atomic(path, "two", 0644);
  EXPECT_EQ(read_file(path), "two");
  struct stat st;
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0644u);
  ::unlink(path.c_str());
}

}  // namespace
}  // namespace upstream
