#include "storage/host_image.h"

#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "common/fd.h"
#include "common/strings.h"

namespace upstream::storage {
namespace {

TEST(HostMask, HiddenMeansNotReadableByEveryone) {
  EXPECT_FALSE(host_entry_hidden(0644, false));
  EXPECT_FALSE(host_entry_hidden(0755, false));
  EXPECT_TRUE(host_entry_hidden(0640, false));
  EXPECT_TRUE(host_entry_hidden(0600, false));
  EXPECT_FALSE(host_entry_hidden(0755, true));
  EXPECT_TRUE(host_entry_hidden(0750, true));
  EXPECT_TRUE(host_entry_hidden(0711, true));  // searchable but not listable
  EXPECT_TRUE(host_entry_hidden(0744, true));  // listable but not searchable
}

TEST(HostMask, AccountsKeepSystemUsersAndAddUser) {
  std::string passwd =
      "root:x:0:0:root:/root:/bin/bash\n"
      "daemon:x:1:1::/usr/sbin:/usr/sbin/nologin\n"
      "alice:x:1000:1000:Alice:/home/alice:/bin/bash\n"
      "nobody:x:65534:65534::/nonexistent:/usr/sbin/nologin\n"
      "bob:x:1001:1001::/home/bob:/bin/zsh\n";
  std::string out = filter_passwd(passwd, "/bin/bash");
  EXPECT_NE(out.find("root:x:0:0"), std::string::npos);
  EXPECT_NE(out.find("nobody:x:65534"), std::string::npos);
  EXPECT_EQ(out.find("alice"), std::string::npos);  // host people are not in boxes
  EXPECT_EQ(out.find("bob"), std::string::npos);
  EXPECT_NE(out.find("user:x:1000:1000:user:/home/user:/bin/bash"), std::string::npos);
  std::string group = filter_group("root:x:0:\nsudo:x:27:alice,daemon\nalice:x:1000:\n",
                                   {"root", "daemon", "user"});
  EXPECT_NE(group.find("sudo:x:27:daemon\n"), std::string::npos);
  EXPECT_EQ(group.find("alice"), std::string::npos);
  EXPECT_NE(group.find("user:x:1000:"), std::string::npos);
}

class HostImageBuild : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (whiteouts and ownership)";
    base_ = "/tmp/upstream-hostimg-" + std::to_string(::getpid());
    host_ = base_ + "/host";
    home_ = base_ + "/home";
    for (const char* d :
         {"usr/bin", "usr/share", "etc/ssl/private", "etc/skel", "var/log", "var/tmp",
          "var/lib/app", "var/lib/upstream", "opt/tool", "usr/lib/python3.11"})
      make_dirs(host_ + "/" + d);
    put("usr/bin/ls", "elf", 0755);
    put("usr/lib/python3.11/EXTERNALLY-MANAGED", "[externally-managed]\n", 0644);
    put("usr/share/secret", "s", 0600);
    put("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n",
        0644);
    put("etc/group", "root:x:0:\n", 0644);
    put("etc/shadow", "root:$6$realhash:19000::::::\n", 0640);
    put("etc/ssl/private/key.pem", "KEY", 0600);
    ::chmod((host_ + "/etc/ssl/private").c_str(), 0700);
    ::chmod((host_ + "/etc/ssl").c_str(), 0775);  // an unusual mode the mask must keep
    put("etc/skel/.bashrc", "# rc", 0644);
    put("var/log/syslog", "log", 0644);
    put("var/lib/app/data", "d", 0644);
    put("var/lib/upstream/state", "ours", 0644);
    ::symlink("usr/bin", (host_ + "/bin").c_str());
    make_dirs(home_);
  }
  void TearDown() override {
    if (!base_.empty()) remove_tree(base_);
  }
  void put(const std::string& rel, const std::string& text, mode_t mode) {
    write_file_atomic(host_ + "/" + rel, text, mode);
  }
  static bool is_whiteout(const std::string& p) {
    struct stat st;
    return ::lstat(p.c_str(), &st) == 0 && S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0);
  }
  HostImageOptions opts() {
    HostImageOptions o;
    o.host_root = host_;
    o.hidden = {"/var/lib/upstream"};
    return o;
  }
  std::string base_, host_, home_;
};

TEST_F(HostImageBuild, MaskHidesWhatUsersCannotRead) {
  Layout layout(home_);
  HostImage img = ensure_host_image(layout, opts(), false, {});
  struct stat st;
  EXPECT_EQ(img.system_dirs, (std::vector<std::string>{"usr", "etc", "var", "opt"}));
  EXPECT_TRUE(is_whiteout(img.mask("usr") + "/share/secret"));
  EXPECT_TRUE(is_whiteout(img.mask("etc") + "/ssl/private"));
  EXPECT_TRUE(is_whiteout(img.mask("var") + "/lib/upstream"));
  EXPECT_FALSE(is_whiteout(img.mask("var") + "/lib/app"));
  // pip installs into the box's own layer, as in the official python images (PEP 668's marker
  // is the host's).
  EXPECT_TRUE(is_whiteout(img.mask("usr") + "/lib/python3.11/EXTERNALLY-MANAGED"));
  ASSERT_EQ(::stat((img.mask("usr") + "/lib/python3.11").c_str(), &st), 0);
  ASSERT_EQ(::stat((img.mask("etc") + "/ssl").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0775u);
  // Accounts are generated; no host hash survives.
  std::string shadow = read_file(img.mask("etc") + "/shadow");
  EXPECT_EQ(shadow.find("realhash"), std::string::npos);
  EXPECT_NE(shadow.find("root:*:"), std::string::npos);
  std::string passwd = read_file(img.mask("etc") + "/passwd");
  EXPECT_EQ(passwd.find("alice"), std::string::npos);
  EXPECT_NE(passwd.find("user:x:1000:1000"), std::string::npos);
  // Fresh /var/log.
  char v[4] = {};
  EXPECT_EQ(::getxattr((img.mask("var") + "/log").c_str(), "trusted.overlay.opaque", v, sizeof v),
            1);
  // Skeleton root.
  char link[64] = {};
  ASSERT_GT(::readlink((img.skel() + "/bin").c_str(), link, sizeof link), 0);
  EXPECT_STREQ(link, "usr/bin");
  ASSERT_EQ(::stat((img.skel() + "/home/user/.bashrc").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 1000u);
  ASSERT_EQ(::stat((img.skel() + "/tmp").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 01777u);
  // secret, shadow (then regenerated), ssl/private, our state, the PEP 668 marker
  EXPECT_EQ(img.masked, 5u);
}

TEST_F(HostImageBuild, ReusedUntilTheHostChanges) {
  Layout layout(home_);
  HostImage a = ensure_host_image(layout, opts(), false, {});
  HostImage b = ensure_host_image(layout, opts(), false, {});
  EXPECT_EQ(a.generation, b.generation);
  // A change in /etc makes the next box get a fresh mask; the old generation goes once unused.
  ::usleep(20000);
  put("etc/newfile", "x", 0600);
  HostImage c = ensure_host_image(layout, opts(), false, {});
  EXPECT_NE(c.generation, a.generation);
  EXPECT_TRUE(is_whiteout(c.mask("etc") + "/newfile"));
  struct stat st;
  EXPECT_NE(::stat(a.dir.c_str(), &st), 0);
  // A generation still in use is kept.
  HostImage d = ensure_host_image(layout, opts(), true, {c.generation});
  EXPECT_EQ(::stat(c.dir.c_str(), &st), 0);
  EXPECT_EQ(current_host_image(layout)->generation, d.generation);
}

TEST_F(HostImageBuild, AGenerationOfAnOlderFormatIsRebuilt) {
  Layout layout(home_);
  HostImage a = ensure_host_image(layout, opts(), false, {});
  std::string manifest = read_file(a.dir + "/manifest.json");
  auto at = manifest.find("\"format\"");
  ASSERT_NE(at, std::string::npos);
  manifest.replace(at, 8, "\"old_fmt\"");  // as an older upstream wrote it: no format
  write_file_atomic(a.dir + "/manifest.json", manifest, 0644);
  std::string why;
  HostImageOptions o = opts();
  o.on_build = [&](const std::string& w) { why = w; };
  HostImage b = ensure_host_image(layout, o, false, {});
  EXPECT_NE(b.generation, a.generation);
  EXPECT_EQ(why, "the last one was made by an older upstream");
  why.clear();
  EXPECT_EQ(ensure_host_image(layout, o, false, {}).generation, b.generation);
  EXPECT_EQ(why, "");
}

}  // namespace
}  // namespace upstream::storage
