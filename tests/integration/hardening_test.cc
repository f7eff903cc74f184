// Escape probes run inside real boxes, as box root and as `user`; each must be denied.
#include <dirent.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "common/fd.h"
#include "common/strings.h"
#include "harness.h"
#include "runtime/slots.h"

#ifndef UPSTREAM_SOURCE_DIR
#error "UPSTREAM_SOURCE_DIR must point at the source tree"
#endif

namespace upstream::testing {
namespace {

class Hardening : public ::testing::TestWithParam<std::string> {};

TEST_P(Hardening, EveryProbeIsDenied) {
  const std::string user = GetParam();
  // A host file to look for, and a host service listening on loopback.
  std::string marker = "/tmp/upstream-escape-marker-" + random_hex(8);
  write_file_atomic(marker, "host", 0644);
  int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  UniqueFd server(s);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(s, 4), 0);
  socklen_t len = sizeof addr;
  ::getsockname(s, reinterpret_cast<sockaddr*>(&addr), &len);
  int port = ntohs(addr.sin_port);

  BoxSpec spec;
  spec.limits.pids = 256;
  ScopedBox box(spec);
  auto fs = engine().files(box.id());
  fs->write("/tmp/probes.py", read_file(std::string(UPSTREAM_SOURCE_DIR) +
                                        "/tests/integration/probes/escape_probes.py"));
  ExecSpec x;
  x.user = user;
  Result r = run(box.id(), {"python3", "/tmp/probes.py", marker, std::to_string(port)}, x);
  ::unlink(marker.c_str());
  ASSERT_EQ(r.code(), 0) << r.err;
  auto results = nlohmann::json::parse(r.out);
  ASSERT_GE(results.size(), 40u);
  for (auto& [probe, outcome] : results.items())
    EXPECT_TRUE(starts_with(outcome.get<std::string>(), "denied")) << probe << ": " << outcome;
  // Nothing reached the listening socket.
  set_nonblocking(s, true);
  EXPECT_LT(::accept(s, nullptr, nullptr), 0);
  EXPECT_EQ(engine().get_box(box.id()).state, "running");
}

INSTANTIATE_TEST_SUITE_P(AsBoxRootAndUser, Hardening, ::testing::Values("root", "user"));

TEST(HardeningHost, BoxProcessesRunAsUnprivilegedHostUids) {
  ScopedBox box;
  sh(box.id(), "sleep 30 >/dev/null 2>&1 &");
  // Every process of the box, in its own cgroup or an exec's child group.
  std::string procs;
  std::string dir = "/sys/fs/cgroup/unified/" + cgroup_group() + "/" + box.id();
  procs += read_file(dir + "/cgroup.procs");
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d))
      if (e->d_type == DT_DIR && e->d_name[0] == 'x')
        procs += read_file(dir + "/" + e->d_name + "/cgroup.procs");
    ::closedir(d);
  }
  int seen = 0;
  for (const auto& p : split(procs, '\n')) {
    if (p.empty()) continue;
    struct stat st;
    if (::stat(("/proc/" + p).c_str(), &st) != 0) continue;
    EXPECT_GE(st.st_uid, runtime::kUidBase) << "pid " << p;
    std::string status = read_file("/proc/" + p + "/status");
    EXPECT_EQ(status.find("\nUid:\t0\t"), std::string::npos) << "pid " << p << " is host root";
    seen++;
  }
  EXPECT_GE(seen, 2);  // the init and the sleep
}

TEST(HardeningHost, SetuidBinariesGainNothing) {
  ScopedBox box;
  sh(box.id(), "cp /usr/bin/id /tmp/rootid && chmod 4755 /tmp/rootid");
  EXPECT_EQ(sh(box.id(), "/tmp/rootid -u", "user"), "1000\n");
}

}  // namespace
}  // namespace upstream::testing
