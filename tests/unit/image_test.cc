#include "storage/image.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "common/error.h"
#include "common/fd.h"

namespace upstream::storage {
namespace {

struct Entry {
  std::string name;
  char type;  // f file, d dir, l symlink, h hardlink
  std::string data;
};

void write_tar(const std::string& path, const std::vector<Entry>& entries) {
  archive* a = archive_write_new();
  archive_write_set_format_pax_restricted(a);
  archive_write_add_filter_gzip(a);
  ASSERT_EQ(archive_write_open_filename(a, path.c_str()), ARCHIVE_OK);
  for (const auto& e : entries) {
    archive_entry* ent = archive_entry_new();
    archive_entry_set_pathname(ent, e.name.c_str());
    archive_entry_set_perm(ent, 0755);
    if (e.type == 'f') {
      archive_entry_set_filetype(ent, AE_IFREG);
      archive_entry_set_size(ent, static_cast<la_int64_t>(e.data.size()));
    } else if (e.type == 'd') {
      archive_entry_set_filetype(ent, AE_IFDIR);
    } else if (e.type == 'l') {
      archive_entry_set_filetype(ent, AE_IFLNK);
      archive_entry_set_symlink(ent, e.data.c_str());
    }
    archive_write_header(a, ent);
    if (e.type == 'f') archive_write_data(a, e.data.data(), e.data.size());
    archive_entry_free(ent);
  }
  archive_write_close(a);
  archive_write_free(a);
}

class ImageTest : public ::testing::Test {
 protected:
  void SetUp() override {
    base_ = "/tmp/upstream-image-test-" + std::to_string(::getpid());
    make_dirs(base_ + "/home");
  }
  void TearDown() override { remove_tree(base_); }
  size_t cache_entries() {
    DIR* d = ::opendir((base_ + "/home/images/tar").c_str());
    if (!d) return 0;
    size_t n = 0;
    while (dirent* e = ::readdir(d))
      if (e->d_name[0] != '.') n++;
    ::closedir(d);
    return n;
  }
  std::string base_;
};

TEST_F(ImageTest, ParseRejectsBadSpecs) {
  EXPECT_EQ(parse_image("").kind, "host");
  EXPECT_EQ(parse_image("host").kind, "host");
  auto code = [](const std::string& spec) {
    try {
      parse_image(spec);
    } catch (const Error& e) {
      return e.code();
    }
    return Errc::internal;
  };
  EXPECT_EQ(code("docker:ubuntu"), Errc::invalid_argument);
  EXPECT_EQ(code("dir:relative/path"), Errc::invalid_argument);
  EXPECT_EQ(code("dir:/definitely/not/here"), Errc::not_found);
  EXPECT_EQ(code("dir:/etc/passwd"), Errc::invalid_argument);    // not a directory
  EXPECT_EQ(code("dir:/etc"), Errc::invalid_argument);           // not a root filesystem
  EXPECT_EQ(code("tar:/etc"), Errc::invalid_argument);           // not a file
  EXPECT_EQ(code("dir:/a,lowerdir=/"), Errc::invalid_argument);  // would break mount options
  EXPECT_EQ(parse_image("dir:/").kind, "dir");
  // A bare name is a snapshot or built image, looked up by the engine.
  EXPECT_EQ(parse_image("py-tools").kind, "snapshot");
  EXPECT_EQ(parse_image("py-tools").spec(), "py-tools");
  EXPECT_EQ(code("-bad"), Errc::invalid_argument);
  EXPECT_EQ(code("has space"), Errc::invalid_argument);
}

TEST_F(ImageTest, ImportsARootfsOnce) {
  std::string tar = base_ + "/ok.tar.gz";
  write_tar(tar, {{"./bin", 'd', ""},
                  {"./bin/sh", 'f', "#!fake"},
                  {"./etc", 'd', ""},
                  {"./bin/link", 'l', "sh"}});
  Layout layout(base_ + "/home");
  std::string root = import_tarball(tar, layout);
  EXPECT_EQ(read_file(root + "/bin/sh"), "#!fake");
  char buf[8] = {};
  EXPECT_EQ(::readlink((root + "/bin/link").c_str(), buf, sizeof buf), 2);
  EXPECT_EQ(import_tarball(tar, layout), root);  // cached by content
  EXPECT_EQ(cache_entries(), 1u);
}

TEST_F(ImageTest, HostileTarballsChangeNothing) {
  Layout layout(base_ + "/home");
  std::vector<std::vector<Entry>> hostile = {
      {{"bin", 'd', ""}, {"../escape", 'f', "x"}},
      {{"bin", 'd', ""}, {"/abs", 'f', "x"}},
      {{"bin", 'd', ""}, {"bin/../../x", 'f', "x"}},
      {{"bin", 'd', ""}, {"out", 'l', base_}, {"out/pwned", 'f', "x"}},
      {{"etc", 'd', ""}, {"etc/hosts", 'f', "x"}},  // no /bin or /usr: not a root filesystem
  };
  int i = 0;
  for (const auto& entries : hostile) {
    std::string tar = base_ + "/bad" + std::to_string(i++) + ".tar.gz";
    write_tar(tar, entries);
    EXPECT_THROW(import_tarball(tar, layout), Error) << tar;
    EXPECT_EQ(cache_entries(), 0u) << tar;
  }
  struct stat st;
  EXPECT_NE(::stat((base_ + "/pwned").c_str(), &st), 0);
  EXPECT_NE(::stat((base_ + "/home/escape").c_str(), &st), 0);
  write_file_atomic(base_ + "/garbage.tar", "this is not a tarball at all", 0644);
  EXPECT_THROW(import_tarball(base_ + "/garbage.tar", layout), Error);
  EXPECT_EQ(cache_entries(), 0u);
}

}  // namespace
}  // namespace upstream::storage
