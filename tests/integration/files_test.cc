#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/error.h"
#include "common/fd.h"
#include "harness.h"
#include "storage/layout.h"

namespace upstream::testing {
namespace {

class Files : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { box_ = new ScopedBox(); }
  static void TearDownTestSuite() {
    delete box_;
    box_ = nullptr;
  }
  static const std::string& id() { return box_->id(); }
  static ScopedBox* box_;
  void SetUp() override {
    local_ = home() + "/local-" + std::to_string(::getpid()) + "-" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name();
    make_dirs(local_);
  }
  void TearDown() override { remove_tree(local_); }
  std::string local_;
};
ScopedBox* Files::box_ = nullptr;

Errc code_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.code();
  }
  return Errc::internal;
}

TEST_F(Files, WriteReadStatListMkdirRemove) {
  auto fs = engine().files(id());
  fs->mkdir("/home/user/proj/src", true);
  fs->write("/home/user/proj/src/main.py", "print('hi')\n");
  EXPECT_EQ(fs->read("/home/user/proj/src/main.py"), "print('hi')\n");
  FileInfo st = fs->stat("/home/user/proj/src/main.py");
  EXPECT_EQ(st.type, "file");
  EXPECT_EQ(st.size, 12u);
  EXPECT_EQ(st.mode, 0644u);
  EXPECT_GT(st.mtime_ms, 0);
  fs->write("/home/user/proj/run.sh", "#!/bin/sh\necho ran\n", 0755);
  EXPECT_EQ(sh(id(), "/home/user/proj/run.sh"), "ran\n");
  auto entries = fs->list("/home/user/proj");
  ASSERT_EQ(entries.size(), 2u);
  std::set<std::string> names{entries[0].name, entries[1].name};
  EXPECT_EQ(names, (std::set<std::string>{"src", "run.sh"}));
  EXPECT_EQ(code_of([&] { fs->remove("/home/user/proj", false); }),
            Errc::already_exists);  // not empty
  fs->remove("/home/user/proj", true);
  EXPECT_EQ(code_of([&] { fs->stat("/home/user/proj"); }), Errc::not_found);
  EXPECT_EQ(code_of([&] { fs->read("/nope"); }), Errc::not_found);
  EXPECT_EQ(code_of([&] { fs->read("/etc"); }), Errc::invalid_argument);
  EXPECT_EQ(code_of([&] { fs->remove("/", true); }), Errc::invalid_argument);
}

TEST_F(Files, WritesAreAtomicAndKeepOwnership) {
  sh(id(),
     "echo old > /home/user/owned && chown user:user /home/user/owned && chmod 600 "
     "/home/user/owned");
  auto fs = engine().files(id(), "root");
  fs->write("/home/user/owned", "new contents\n");
  EXPECT_EQ(sh(id(), "stat -c '%U %a' /home/user/owned; cat /home/user/owned"),
            "user 600\nnew contents\n");
  // No temporary files are left behind.
  EXPECT_EQ(sh(id(), "ls -a /home/user | grep -c upstream || true"), "0\n");
}

TEST_F(Files, ActAsTheRequestedUser) {
  auto fs = engine().files(id(), "user");
  fs->write("/home/user/mine.txt", "x");
  EXPECT_EQ(sh(id(), "stat -c %u:%g /home/user/mine.txt"), "1000:1000\n");
  EXPECT_EQ(code_of([&] { fs->write("/etc/not-allowed", "x"); }), Errc::failed_precondition);
  EXPECT_EQ(code_of([&] { fs->read("/etc/shadow"); }), Errc::failed_precondition);
}

TEST_F(Files, MoveWorksAcrossTheBoxesMounts) {
  auto fs = engine().files(id());
  fs->write("/tmp/moveme", "payload");
  fs->move("/tmp/moveme", "/usr/local/bin/moved");  // / and /usr are different overlays
  EXPECT_EQ(fs->read("/usr/local/bin/moved"), "payload");
  EXPECT_EQ(code_of([&] { fs->stat("/tmp/moveme"); }), Errc::not_found);
  fs->mkdir("/tmp/dirmove/sub", true);
  fs->write("/tmp/dirmove/sub/f", "deep");
  fs->move("/tmp/dirmove", "/opt/dirmove");
  EXPECT_EQ(fs->read("/opt/dirmove/sub/f"), "deep");
}

TEST_F(Files, TarRoundTripAndLocalCopies) {
  std::string src = local_ + "/src";
  make_dirs(src + "/nested/deeper");
  write_file_atomic(src + "/a.txt", "alpha", 0644);
  write_file_atomic(src + "/nested/deeper/b.bin", std::string(300000, '\x7f'), 0755);
  ASSERT_EQ(::symlink("a.txt", (src + "/link").c_str()), 0);
  auto fs = engine().files(id());
  fs->copy_in(src, "/home/user/");
  EXPECT_EQ(sh(id(),
               "cat /home/user/src/a.txt; readlink /home/user/src/link; stat -c %s "
               "/home/user/src/nested/deeper/b.bin"),
            "alphaa.txt\n300000\n");
  // Download as tar, upload the tar elsewhere, compare.
  std::string tar = local_ + "/out.tar";
  {
    UniqueFd out(::open(tar.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    EXPECT_GE(fs->download_tar("/home/user/src", out.get()), 5u);
  }
  {
    UniqueFd in(::open(tar.c_str(), O_RDONLY | O_CLOEXEC));
    fs->upload_tar("/srv/copy", in.get());
  }
  EXPECT_EQ(sh(id(),
               "cd /home/user && find src -type f -exec md5sum {} + | sort > /tmp/a; cd /srv/copy "
               "&& find src "
               "-type f -exec md5sum {} + | sort > /tmp/b; cmp /tmp/a /tmp/b && echo same"),
            "same\n");
  // And back out to the host.
  fs->copy_out("/srv/copy/src", local_ + "/back");
  EXPECT_EQ(read_file(local_ + "/back/nested/deeper/b.bin").size(), 300000u);
  EXPECT_EQ(read_file(local_ + "/back/a.txt"), "alpha");
  fs->copy_out("/srv/copy/src/a.txt", local_ + "/single.txt");
  EXPECT_EQ(read_file(local_ + "/single.txt"), "alpha");
}

TEST_F(Files, StoppedBoxesCanBeReadAndWritten) {
  ScopedBox box;
  sh(box.id(), "echo before > /home/user/f");
  engine().stop_box(box.id(), 0);
  {
    auto fs = engine().files(box.id());
    EXPECT_EQ(fs->read("/home/user/f"), "before\n");
    fs->write("/home/user/g", "written while stopped\n");
    EXPECT_EQ(engine().get_box(box.id()).state, "stopped");
  }
  EXPECT_EQ(engine().get_box(box.id()).state, "stopped");
  engine().start_box(box.id());
  EXPECT_EQ(sh(box.id(), "cat /home/user/g"), "written while stopped\n");
}

TEST_F(Files, PathsCannotLeaveTheBox) {
  auto fs = engine().files(id());
  // A host file that must stay out of reach.
  write_file_atomic(local_ + "/host-secret", "HOST SECRET", 0644);
  // "..", absolute symlinks and symlinks to the host path all resolve inside the box.
  EXPECT_EQ(code_of([&] { fs->read("/../../../../../" + local_ + "/host-secret"); }),
            Errc::not_found);
  sh(id(),
     "ln -sfn " + local_ + "/host-secret /tmp/abs-link; ln -sfn ../../../../../../.. /tmp/up-link");
  EXPECT_EQ(code_of([&] { fs->read("/tmp/abs-link"); }), Errc::not_found);
  EXPECT_EQ(code_of([&] { fs->read("/tmp/up-link/" + local_ + "/host-secret"); }), Errc::not_found);
  std::string shadow = fs->read("/tmp/up-link/etc/shadow");
  EXPECT_EQ(shadow.find("$6$"), std::string::npos);  // the box's own, locked, shadow
  // Writing through such links lands inside the box too.
  fs->write("/tmp/up-link/tmp/written-via-link", "x");
  EXPECT_FALSE(path_exists("/tmp/written-via-link"));
  EXPECT_EQ(sh(id(), "cat /tmp/written-via-link"), "x");
  // Tarballs with entries that climb out are refused whole.
  std::string tar = local_ + "/evil.tar";
  ASSERT_EQ(
      ::system(("python3 -c \"import tarfile, io; t = tarfile.open('" + tar +
                "', 'w'); i = tarfile.TarInfo('fine'); i.size = 1; t.addfile(i, io.BytesIO(b'x')); "
                "i = tarfile.TarInfo('../../escape'); i.size = 1; t.addfile(i, io.BytesIO(b'x')); "
                "t.close()\"")
                   .c_str()),
      0);
  UniqueFd in(::open(tar.c_str(), O_RDONLY | O_CLOEXEC));
  EXPECT_EQ(code_of([&] { fs->upload_tar("/tmp/evil", in.get()); }), Errc::invalid_argument);
  EXPECT_EQ(sh(id(), "ls /tmp/evil 2>/dev/null | wc -l; ls / | grep -c escape || true"), "0\n0\n");
}

TEST_F(Files, CopiesOutNeverFollowTheBoxesSymlinks) {
  // A box prepares a tree whose symlinks point at host paths; copying it out must create the
  // symlinks as symlinks and never write through them.
  std::string target = local_ + "/victim";
  make_dirs(target);
  write_file_atomic(target + "/keep", "untouched", 0644);
  sh(id(), "mkdir -p /tmp/trap && ln -sfn " + target +
               " /tmp/trap/link && echo pwned > /tmp/trap/zz && "
               "ln -sfn " +
               target + "/keep /tmp/trap/filelink");
  auto fs = engine().files(id());
  fs->copy_out("/tmp/trap", local_ + "/got");
  EXPECT_EQ(read_file(target + "/keep"), "untouched");
  char buf[512] = {};
  ASSERT_GT(::readlink((local_ + "/got/link").c_str(), buf, sizeof buf - 1), 0);
  EXPECT_EQ(std::string(buf), target);
  EXPECT_EQ(read_file(local_ + "/got/zz"), "pwned\n");
  // Set-id bits do not survive the trip to the host.
  sh(id(), "cp /bin/true /tmp/suid && chmod 4755 /tmp/suid");
  fs->copy_out("/tmp/suid", local_ + "/suid");
  struct stat st;
  ASSERT_EQ(::stat((local_ + "/suid").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0755u);
}

TEST_F(Files, UnusualNames) {
  auto fs = engine().files(id());
  std::string name = "/tmp/space name-ünïcödé-\x01-end";
  fs->write(name, "ok");
  EXPECT_EQ(fs->read(name), "ok");
  bool found = false;
  for (const auto& e : fs->list("/tmp")) found |= e.name == "space name-ünïcödé-\x01-end";
  EXPECT_TRUE(found);
}

}  // namespace
}  // namespace upstream::testing
