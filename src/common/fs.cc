#include "common/fs.h"

#include <fcntl.h>
#include <ftw.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <thread>

#include "common/error.h"
#include "common/strings.h"
#include "common/time.h"

namespace upstream {

void make_dirs(const std::string& path, unsigned mode) {
  std::string cur;
  for (const auto& part : split(path, '/')) {
    if (part.empty()) continue;
    cur += "/" + part;
    if (::mkdir(cur.c_str(), mode) != 0 && errno != EEXIST) throw_sys("mkdir " + cur);
  }
}

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

Dir::Dir(const std::string& path, bool missing_ok) : d_(::opendir(path.c_str())) {
  if (!d_ && !missing_ok) throw_sys("open directory " + path);
}

Dir::~Dir() {
  if (d_) ::closedir(d_);
}

std::vector<Dir::Entry> Dir::entries() {
  std::vector<Entry> out;
  if (!d_) return out;
  while (dirent* e = ::readdir(d_)) {
    std::string n = e->d_name;
    if (n == "." || n == "..") continue;
    out.push_back({n, e->d_type});
  }
  return out;
}

std::vector<uint32_t> numbered_files(const std::string& dir, const std::string& suffix) {
  std::vector<uint32_t> out;
  for (const auto& e : Dir(dir).entries()) {
    const std::string& n = e.name;
    if (n.size() > suffix.size() && n.size() < suffix.size() + 11 && n.ends_with(suffix) &&
        n.find_first_not_of("0123456789") == n.size() - suffix.size())
      out.push_back(static_cast<uint32_t>(std::stoul(n.substr(0, n.size() - suffix.size()))));
  }
  return out;
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

}  // namespace upstream
