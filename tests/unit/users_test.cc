#include "init/users.h"

#include <gtest/gtest.h>

#include "common/error.h"

namespace upstream::init {
namespace {

const char* kPasswd =
    "root:x:0:0:root:/root:/bin/bash\n"
    "daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"
    "user:x:1000:1000:user:/home/user:/bin/bash\n"
    "app:x:1001:1002::/srv/app:/bin/sh\n"
    "broken line\n";
const char* kGroup =
    "root:x:0:\n"
    "tty:x:5:user\n"
    "user:x:1000:\n"
    "docker:x:999:user,app\n"
    "big:x:70000:user\n";

TEST(ResolveUser, ByName) {
  Identity id = resolve_user("user", 65536, kPasswd, kGroup);
  EXPECT_EQ(id.uid, 1000u);
  EXPECT_EQ(id.gid, 1000u);
  EXPECT_EQ(id.home, "/home/user");
  EXPECT_EQ(id.name, "user");
  // Supplementary groups from /etc/group, never outside the box's id range.
  EXPECT_EQ(id.groups, (std::vector<gid_t>{1000, 5, 999}));
}

TEST(ResolveUser, ByNumberAndPair) {
  Identity id = resolve_user("1001", 65536, kPasswd, kGroup);
  EXPECT_EQ(id.name, "app");
  EXPECT_EQ(id.gid, 1002u);
  id = resolve_user("1001:7", 65536, kPasswd, kGroup);
  EXPECT_EQ(id.gid, 7u);
  id = resolve_user("4242", 65536, kPasswd, kGroup);  // not in passwd: still usable
  EXPECT_EQ(id.uid, 4242u);
  EXPECT_EQ(id.gid, 4242u);
  EXPECT_EQ(id.home, "/");
}

TEST(ResolveUser, BuiltInNamesWithoutPasswd) {
  Identity id = resolve_user("user", 65536, "", "");
  EXPECT_EQ(id.uid, 1000u);
  EXPECT_EQ(id.home, "/home/user");
  id = resolve_user("root", 65536, "", "");
  EXPECT_EQ(id.uid, 0u);
  EXPECT_EQ(id.home, "/root");
}

TEST(ResolveUser, Rejects) {
  EXPECT_THROW(resolve_user("nobody-here", 65536, kPasswd, kGroup), Error);
  EXPECT_THROW(resolve_user("70000", 65536, kPasswd, kGroup), Error);
  EXPECT_THROW(resolve_user("1000:x", 65536, kPasswd, kGroup), Error);
  EXPECT_THROW(resolve_user("0:65536", 65536, kPasswd, kGroup), Error);
}

}  // namespace
}  // namespace upstream::init
