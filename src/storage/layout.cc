#include "storage/layout.h"

#include <sys/stat.h>

#include <cerrno>

#include "common/error.h"
#include "common/strings.h"

namespace upstream::storage {

Layout::Layout(std::string h) : home(std::move(h)) {
  while (home.size() > 1 && home.back() == '/') home.pop_back();
  data_root = home;
}

void make_dirs(const std::string& path, unsigned mode) {
  std::string cur;
  for (const auto& part : split(path, '/')) {
    if (part.empty()) continue;
    cur += "/" + part;
    if (::mkdir(cur.c_str(), mode) != 0 && errno != EEXIST) throw_sys("mkdir " + cur);
  }
}

}  // namespace upstream::storage

#include <fcntl.h>
#include <ftw.h>
#include <sys/file.h>
#include <unistd.h>

#include <thread>

#include "common/time.h"

namespace upstream::storage {

void remove_tree(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return;
    throw_sys("stat " + path);
  }
  if (!S_ISDIR(st.st_mode)) {
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) throw_sys("remove " + path);
    return;
  }
  auto rm = [](const char* p, const struct stat*, int type, FTW*) -> int {
    int rc = (type == FTW_DP) ? ::rmdir(p) : ::unlink(p);
    return (rc != 0 && errno != ENOENT) ? -1 : 0;
  };
  if (::nftw(path.c_str(), rm, 64, FTW_DEPTH | FTW_PHYS | FTW_MOUNT) != 0 && errno != ENOENT)
    throw_sys("remove " + path);
}

namespace {

int open_lock_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0 && errno == ENOENT) {
    make_dirs(path.substr(0, path.rfind('/')), 0700);
    fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  }
  if (fd < 0) throw_sys("open " + path);
  return fd;
}

}  // namespace

FileLock::FileLock(const std::string& path, int timeout_ms) {
  fd_.reset(open_lock_file(path));
  if (timeout_ms < 0) {
    while (::flock(fd_.get(), LOCK_EX) != 0)
      if (errno != EINTR) throw_sys("lock " + path);
    return;
  }
  int64_t deadline = mono_ms() + timeout_ms;
  while (::flock(fd_.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno != EWOULDBLOCK && errno != EINTR) throw_sys("lock " + path);
    if (mono_ms() >= deadline) throw Error(Errc::timeout, "timed out waiting for " + path);
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

std::optional<FileLock> FileLock::try_lock(const std::string& path) {
  FileLock l;
  l.fd_.reset(open_lock_file(path));
  if (::flock(l.fd_.get(), LOCK_EX | LOCK_NB) != 0) return std::nullopt;
  return l;
}

}  // namespace upstream::storage
