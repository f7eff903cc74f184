#include "storage/layers.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/time.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "common/error.h"
#include "common/fd.h"
#include "store/box_store.h"

namespace upstream::storage {
namespace {

class LayersTest : public ::testing::Test {
 protected:
  void SetUp() override {
    base_ = "/tmp/upstream-layers-test-" + std::to_string(::getpid());
    remove_tree(base_);
    make_dirs(base_ + "/home", 0700);
    layout_ = std::make_unique<Layout>(base_ + "/home");
    pool_ = std::make_unique<Pool>(Pool::open(*layout_, {"dir", std::nullopt}));
    store_ = std::make_unique<LayerStore>(*pool_);
  }
  void TearDown() override { remove_tree(base_); }

  // A small layer: a file, a directory with a file, a symlink, a whiteout.
  std::string make_tree(const std::string& name) {
    std::string d = base_ + "/" + name;
    make_dirs(d + "/root/home/user", 0755);
    write(d + "/root/home/user/a.txt", "hello\n");
    write(d + "/root/data", std::string(300000, 'x'));
    EXPECT_EQ(::symlink("a.txt", (d + "/root/home/user/link").c_str()), 0);
    EXPECT_EQ(::mknod((d + "/root/gone").c_str(), S_IFCHR | 0, makedev(0, 0)), 0);
    EXPECT_EQ(::setxattr((d + "/root/home").c_str(), "trusted.overlay.opaque", "y", 1, 0), 0);
    // Fixed file times, so that two trees made the same way are the same.
    for (const char* f : {"/root/home/user/a.txt", "/root/data"}) {
      timespec ts[2] = {{1000000000, 5}, {1000000000, 5}};
      EXPECT_EQ(::utimensat(AT_FDCWD, (d + f).c_str(), ts, AT_SYMLINK_NOFOLLOW), 0);
    }
    return d;
  }
  void write(const std::string& path, const std::string& text) {
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    ASSERT_TRUE(fd);
    write_all(fd.get(), text);
  }
  void touch_time(const std::string& path) {
    timespec ts[2] = {{1000000000, 5}, {1000000000, 5}};
    ::utimensat(AT_FDCWD, path.c_str(), ts, AT_SYMLINK_NOFOLLOW);
  }

  std::string base_;
  std::unique_ptr<Layout> layout_;
  std::unique_ptr<Pool> pool_;
  std::unique_ptr<LayerStore> store_;
};

TEST_F(LayersTest, DigestIsCanonicalAndSeesEveryKindOfChange) {
  LayerInfo a = digest_tree(make_tree("a"));
  LayerInfo b = digest_tree(make_tree("b"));
  EXPECT_TRUE(is_digest(a.digest));
  EXPECT_EQ(a.digest, b.digest);
  EXPECT_EQ(a.bytes, 6u + 300000u);
  EXPECT_EQ(a.files, 7u);  // root, data, gone, home, user, a.txt, link

  std::string d = base_ + "/b";
  auto changed = [&](const char* what) {
    std::string now = digest_tree(d).digest;
    EXPECT_NE(now, a.digest) << what;
    return now;
  };
  // A directory's own time is not part of the digest.
  struct timeval tv[2] = {{5, 0}, {5, 0}};
  ::utimes((d + "/root/home").c_str(), tv);
  EXPECT_EQ(digest_tree(d).digest, a.digest);

  write(d + "/root/home/user/a.txt", "hellO\n");
  touch_time(d + "/root/home/user/a.txt");
  std::string c1 = changed("content");
  write(d + "/root/home/user/a.txt", "hello\n");
  touch_time(d + "/root/home/user/a.txt");
  EXPECT_EQ(digest_tree(d).digest, a.digest);
  ::chmod((d + "/root/data").c_str(), 0600);
  changed("mode");
  ::chmod((d + "/root/data").c_str(), 0644);
  ::lchown((d + "/root/data").c_str(), 1000, 1000);
  changed("owner");
  ::lchown((d + "/root/data").c_str(), 0, 0);
  ::removexattr((d + "/root/home").c_str(), "trusted.overlay.opaque");
  changed("xattr");
  ::setxattr((d + "/root/home").c_str(), "trusted.overlay.opaque", "y", 1, 0);
  timespec ts[2] = {{1000000001, 5}, {1000000001, 5}};
  ::utimensat(AT_FDCWD, (d + "/root/data").c_str(), ts, 0);
  changed("file time");
  touch_time(d + "/root/data");
  ::unlink((d + "/root/home/user/link").c_str());
  ASSERT_EQ(::symlink("other", (d + "/root/home/user/link").c_str()), 0);
  changed("symlink target");
  ::unlink((d + "/root/home/user/link").c_str());
  ASSERT_EQ(::symlink("a.txt", (d + "/root/home/user/link").c_str()), 0);
  ::rename((d + "/root/gone").c_str(), (d + "/root/gone2").c_str());
  changed("name");
  ::rename((d + "/root/gone2").c_str(), (d + "/root/gone").c_str());
  EXPECT_EQ(digest_tree(d).digest, a.digest);
}

TEST_F(LayersTest, CommitStoresOnceAndChecksExpectedDigests) {
  std::string s1 = store_->new_staging();
  std::string t = make_tree("t");
  ASSERT_EQ(::rename((t + "/root").c_str(), (s1 + "/root").c_str()), 0);
  LayerInfo a = store_->commit(s1);
  EXPECT_TRUE(store_->exists(a.digest));
  struct stat st;
  EXPECT_NE(::stat(s1.c_str(), &st), 0);  // moved into place
  EXPECT_EQ(store_->list(), std::vector<std::string>{a.digest});

  // The same tree again: stored once, the copy dropped.
  std::string s2 = store_->new_staging();
  std::string u = make_tree("u");
  ASSERT_EQ(::rename((u + "/root").c_str(), (s2 + "/root").c_str()), 0);
  EXPECT_EQ(store_->commit(s2).digest, a.digest);
  EXPECT_NE(::stat(s2.c_str(), &st), 0);
  EXPECT_EQ(store_->list().size(), 1u);

  // A tree that does not match the digest it claims is refused and dropped.
  std::string s3 = store_->new_staging();
  std::string v = make_tree("v");
  write(v + "/root/data", "tampered");
  ASSERT_EQ(::rename((v + "/root").c_str(), (s3 + "/root").c_str()), 0);
  try {
    store_->commit(s3, a.digest);
    FAIL() << "a corrupt layer was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("corrupt"), std::string::npos);
  }
  EXPECT_NE(::stat(s3.c_str(), &st), 0);
  EXPECT_EQ(store_->list().size(), 1u);

  store_->remove(a.digest);
  EXPECT_FALSE(store_->exists(a.digest));
  EXPECT_TRUE(store_->list().empty());
  store_->remove(a.digest);  // gone already: fine
}

TEST_F(LayersTest, StaleStagingOfDeadProcessesIsRemoved) {
  std::string mine = store_->new_staging();
  std::string root = pool_->layers_root();
  // A staging directory of a process that no longer exists (pid 1 with another start time).
  std::string dead = root + "/.staging-1-12345-deadbeef";
  make_dirs(dead + "/root", 0700);
  store_->remove_stale_staging();
  struct stat st;
  EXPECT_NE(::stat(dead.c_str(), &st), 0);
  EXPECT_EQ(::stat(mine.c_str(), &st), 0);  // ours: we are alive
  store_->discard(mine);
  EXPECT_NE(::stat(mine.c_str(), &st), 0);
}

TEST(DigestNames, OnlyLowercaseHex64) {
  EXPECT_TRUE(is_digest(std::string(64, 'a')));
  EXPECT_FALSE(is_digest(std::string(63, 'a')));
  EXPECT_FALSE(is_digest(std::string(64, 'A')));
  EXPECT_FALSE(is_digest(std::string(63, 'a') + "/"));
  EXPECT_FALSE(is_digest(".staging-1-2-3"));
}

TEST(SnapshotStore, RecordsReferencesAndMigration) {
  std::string path = "/tmp/upstream-snapstore-test-" + std::to_string(::getpid()) + ".db";
  ::unlink(path.c_str());
  {
    store::Db db = store::Db::open(path);
    store::BoxStore s(db);
    s.migrate();
    // A database of the first schema version is brought up to date.
    db.exec(
        "DROP TABLE snapshots; DROP TABLE layers; ALTER TABLE boxes DROP COLUMN last_active_at; "
        "PRAGMA user_version = 1;");
  }
  store::Db db = store::Db::open(path);
  store::BoxStore s(db);
  s.migrate();
  SnapshotRecord r;
  r.id = "0123456789ab";
  r.name = "prepared";
  r.base_image = "host";
  r.layers = {std::string(64, 'b'), std::string(64, 'a')};
  r.config.env = {"A=1"};
  r.config.limits.memory = 1 << 20;
  r.labels = {{"upstream.tenant", "acme"}};
  r.bytes = 10;
  r.total_bytes = 30;
  r.created_at = 1234;
  s.insert_snapshot(r, {{std::string(64, 'b'), 10, 3}});
  EXPECT_TRUE(s.snapshot_name_taken("prepared"));
  auto got = s.resolve_snapshot("prepared");
  EXPECT_EQ(got.id, r.id);
  EXPECT_EQ(got.layers, r.layers);
  EXPECT_EQ(got.config.env, r.config.env);
  EXPECT_EQ(*got.config.limits.memory, 1u << 20);
  EXPECT_EQ(got.labels.at("upstream.tenant"), "acme");
  EXPECT_EQ(s.resolve_snapshot("0123").name, "prepared");  // id prefix
  EXPECT_EQ(s.find_layer(std::string(64, 'b'))->files, 3u);
  EXPECT_EQ(s.referenced_layers(),
            (std::set<std::string>{std::string(64, 'a'), std::string(64, 'b')}));
  try {
    s.insert_snapshot(r, {});
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::already_exists);
  }
  try {
    s.resolve_snapshot("nope");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::not_found);
  }
  // Boxes refer to a snapshot by name in their spec.
  BoxRecord b;
  b.id = "aaaaaaaaaaaa";
  b.name = "child";
  b.state = "running";
  b.spec.image = "prepared";
  s.insert_box(b);
  EXPECT_EQ(s.boxes_using("prepared"), std::vector<std::string>{"aaaaaaaaaaaa"});
  EXPECT_TRUE(s.boxes_using("other").empty());
  s.delete_snapshot(r.id);
  EXPECT_TRUE(s.referenced_layers().empty());
  for (const char* ext : {"", "-wal", "-shm"}) ::unlink((path + ext).c_str());
}

}  // namespace
}  // namespace upstream::storage
