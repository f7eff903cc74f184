#include "runtime/cgroup.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "common/fd.h"
#include "storage/layout.h"

namespace upstream::runtime {
namespace {

// Control files are plain files here: what matters is what we write to which file.
class CgroupFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = "/tmp/upstream-cgroup-test-" + std::to_string(::getpid());
    make_dirs(dir_);
  }
  void TearDown() override { remove_tree(dir_); }
  // Control files are replaced by each write; plain files need emptying between writes.
  void touch(const std::string& path) { write_file_atomic(path, "", 0644); }
  void reset_files() {
    for (const auto& f :
         {"cpu.max", "memory.max", "memory.swap.max", "pids.max", "cpu/cpu.cfs_period_us",
          "cpu/cpu.cfs_quota_us", "memory/memory.limit_in_bytes",
          "memory/memory.memsw.limit_in_bytes", "pids/pids.max"})
      if (::access((dir_ + "/" + f).c_str(), F_OK) == 0) touch(dir_ + "/" + f);
  }
  std::string read(const std::string& path) { return read_file(path); }
  std::string dir_;
};

TEST_F(CgroupFiles, V2LimitsFormat) {
  for (const char* f : {"cpu.max", "memory.max", "memory.swap.max", "pids.max"})
    touch(dir_ + "/" + f);
  write_v2_limits(dir_, {1500, 512ull << 20, 64});
  EXPECT_EQ(read(dir_ + "/cpu.max"), "150000 100000");
  EXPECT_EQ(read(dir_ + "/memory.max"), std::to_string(512ull << 20));
  EXPECT_EQ(read(dir_ + "/memory.swap.max"), "0");
  EXPECT_EQ(read(dir_ + "/pids.max"), "64");
  reset_files();
  write_v2_limits(dir_, {});
  EXPECT_EQ(read(dir_ + "/cpu.max"), "max 100000");
  EXPECT_EQ(read(dir_ + "/memory.max"), "max");
  EXPECT_EQ(read(dir_ + "/pids.max"), "max");
}

TEST_F(CgroupFiles, V2LimitsSkipMissingControllers) {
  touch(dir_ + "/pids.max");
  write_v2_limits(dir_, {1000, 1 << 30, 10});  // no cpu or memory files: nothing thrown
  EXPECT_EQ(read(dir_ + "/pids.max"), "10");
}

TEST_F(CgroupFiles, V1LimitsFormat) {
  std::string cpu = dir_ + "/cpu", mem = dir_ + "/memory", pids = dir_ + "/pids";
  make_dirs(cpu);
  make_dirs(mem);
  make_dirs(pids);
  for (const auto& f :
       {cpu + "/cpu.cfs_period_us", cpu + "/cpu.cfs_quota_us", mem + "/memory.limit_in_bytes",
        mem + "/memory.memsw.limit_in_bytes", pids + "/pids.max"})
    touch(f);
  write_v1_limits({{"cpu", cpu}, {"memory", mem}, {"pids", pids}}, {500, 256ull << 20, 100});
  EXPECT_EQ(read(cpu + "/cpu.cfs_period_us"), "100000");
  EXPECT_EQ(read(cpu + "/cpu.cfs_quota_us"), "50000");
  EXPECT_EQ(read(mem + "/memory.limit_in_bytes"), std::to_string(256ull << 20));
  EXPECT_EQ(read(mem + "/memory.memsw.limit_in_bytes"), std::to_string(256ull << 20));
  EXPECT_EQ(read(pids + "/pids.max"), "100");
  reset_files();
  write_v1_limits({{"cpu", cpu}, {"memory", mem}, {"pids", pids}}, {});
  EXPECT_EQ(read(cpu + "/cpu.cfs_quota_us"), "-1");
  EXPECT_EQ(read(mem + "/memory.limit_in_bytes"), "-1");
  EXPECT_EQ(read(pids + "/pids.max"), "max");
}

TEST(CgroupSystem, ControllerHomes) {
  CgroupSystem hybrid("/sys/fs/cgroup/unified",
                      {{"cpu", "/c"}, {"cpuacct", "/c"}, {"memory", "/m"}, {"pids", "/p"}}, {});
  EXPECT_EQ(hybrid.controller_home("memory"), "v1");
  EXPECT_EQ(hybrid.controller_home("io"), "");
  EXPECT_NE(hybrid.describe().find("hybrid"), std::string::npos);
  CgroupSystem v2("/sys/fs/cgroup", {}, {"cpu", "memory", "pids", "io"});
  EXPECT_EQ(v2.controller_home("memory"), "v2");
  EXPECT_EQ(v2.controller_home("cpuacct"), "v2");  // cpu.stat in v2 covers accounting
  EXPECT_NE(v2.describe().find("v2"), std::string::npos);
}

TEST(CgroupSystem, DetectsThisHost) {
  CgroupSystem sys = CgroupSystem::detect("/run/upstream/cgroup2");
  EXPECT_FALSE(sys.v2_root().empty());
  // Every limit needs a home, v1 or v2.
  for (const char* c : {"cpu", "memory", "pids"}) {
    EXPECT_NE(sys.controller_home(c), "") << c;
  }
}

}  // namespace
}  // namespace upstream::runtime
