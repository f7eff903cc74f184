#include <unistd.h>

#include "common/error.h"
#include "common/fd.h"
#include "harness.h"

namespace upstream::testing {
namespace {

TEST(Images, RootfsDirectory) {
  BoxSpec s;
  s.image = "dir:" + busybox_rootfs();
  s.name = "bb-dir";
  ScopedBox box(s);
  EXPECT_EQ(sh(box.id(), "hostname; id -u; ls /"),
            "bb-dir\n0\nbin\ndev\netc\nhome\nproc\nroot\nrun\nsys\ntmp\n");
  // The image itself is never written: changes go to the box's own layer.
  sh(box.id(), "echo changed > /etc/passwd && touch /bin/newfile");
  EXPECT_EQ(read_file(busybox_rootfs() + "/etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n");
  EXPECT_FALSE(path_exists(busybox_rootfs() + "/bin/newfile"));
  // A user the image does not know still works, with a home of its own.
  EXPECT_EQ(sh(box.id(), "id -u; pwd", "user"), "1000\n/home/user\n");
}

TEST(Images, RootfsTarballIsUnpackedOnce) {
  std::string tar = home() + "/busybox.tar.gz";
  ASSERT_EQ(::system(("tar -C " + busybox_rootfs() + " -czf " + tar + " .").c_str()), 0);
  BoxSpec s;
  s.image = "tar:" + tar;
  ScopedBox a(s), b(s);
  EXPECT_EQ(sh(a.id(), "cat /etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n");
  sh(a.id(), "echo only-in-a > /tmp/x");
  EXPECT_EQ(sh(b.id(), "cat /tmp/x 2>/dev/null || echo absent"), "absent\n");
  EXPECT_EQ(engine().get_box(a.id()).spec.image, "tar:" + tar);
}

TEST(Images, HostImageHidesHostSecrets) {
  ScopedBox box;
  // Host accounts and hashes stay out; `user` exists; our state directory is invisible.
  EXPECT_EQ(sh(box.id(), "grep -c '^user:x:1000:1000' /etc/passwd"), "1\n");
  EXPECT_EQ(sh(box.id(), "grep -c '\\$[0-9]\\$' /etc/shadow || true"), "0\n");
  EXPECT_EQ(sh(box.id(), "ls /root | wc -l; ls /home"), "0\nuser\n");
  EXPECT_EQ(sh(box.id(), "test -e " + home() + " && echo visible || echo hidden"), "hidden\n");
  EXPECT_EQ(sh(box.id(), "ls /var/log | wc -l"), "0\n");
  // And the box can still install into system directories (its own copy).
  EXPECT_EQ(
      sh(box.id(),
         "echo '#!/bin/sh' > /usr/local/bin/mine && chmod +x /usr/local/bin/mine && which mine"),
      "/usr/local/bin/mine\n");
  EXPECT_FALSE(path_exists("/usr/local/bin/mine"));
}

}  // namespace
}  // namespace upstream::testing
