#include <sys/mount.h>
#include <unistd.h>

#include "common/error.h"
#include "common/fd.h"
#include "common/strings.h"
#include "harness.h"
#include "storage/layout.h"

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

TEST(Images, HostImageWithTheStateDirectoryInsideVar) {
  // The default state directory, /var/lib/upstream, lies inside a layer of the host image.
  std::string home = "/var/lib/upstream-test-" + random_hex(6);
  EngineOptions o = engine().options();
  o.home = home;
  o.pool_size = 2ull << 30;
  {
    auto e = Engine::open(o);
    BoxRecord b = e->create_box({});
    ExecSpec x;
    x.shell = "ls /var/lib | grep -c upstream-test || true; echo ok > /var/tmp/x && cat /var/tmp/x";
    std::string out;
    ExecRecord r = e->start_exec(b.id, x)->wait([&](Stream, std::string_view d) { out.append(d); });
    EXPECT_EQ(r.exit_code, 0);
    EXPECT_EQ(out, "0\nok\n");  // our own state stays hidden
    e->remove_box(b.id, true);
  }
  ::umount2((home + "/pool").c_str(), MNT_DETACH);
  remove_tree(home);
}

}  // namespace
}  // namespace upstream::testing
