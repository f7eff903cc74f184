#include "common/fd.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>

#include "common/error.h"

namespace upstream {

void UniqueFd::reset(int fd) {
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

UniqueFd open_or_throw(const std::string& path, int flags, int mode) {
  int fd = ::open(path.c_str(), flags | O_CLOEXEC, mode);
  if (fd < 0) throw_sys(errno == ENOENT ? Errc::not_found : Errc::internal, "open " + path);
  return UniqueFd(fd);
}

UniqueFd openat_or_throw(int dirfd, const std::string& path, int flags, int mode) {
  int fd = ::openat(dirfd, path.c_str(), flags | O_CLOEXEC, mode);
  if (fd < 0) throw_sys(errno == ENOENT ? Errc::not_found : Errc::internal, "open " + path);
  return UniqueFd(fd);
}

Pipe make_pipe(int flags) {
  int p[2];
  if (::pipe2(p, flags) != 0) throw_sys("pipe");
  return Pipe{UniqueFd(p[0]), UniqueFd(p[1])};
}

void write_all(int fd, const void* data, size_t len) {
  auto* p = static_cast<const char*>(data);
  while (len > 0) {
    ssize_t n = ::write(fd, p, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_sys("write");
    }
    p += n;
    len -= static_cast<size_t>(n);
  }
}

void write_all(int fd, const std::string& data) { write_all(fd, data.data(), data.size()); }

std::string read_all(int fd, size_t limit) {
  std::string out;
  char buf[65536];
  while (out.size() < limit) {
    size_t want = std::min(sizeof buf, limit - out.size());
    ssize_t n = ::read(fd, buf, want);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_sys("read");
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

std::string read_file(const std::string& path, size_t limit) {
  UniqueFd fd = open_or_throw(path, O_RDONLY);
  return read_all(fd.get(), limit);
}

std::optional<std::string> try_read_file(const std::string& path, size_t limit) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return std::nullopt;
  std::string out;
  char buf[16384];
  while (out.size() < limit) {
    ssize_t n = ::read(fd.get(), buf, std::min(sizeof buf, limit - out.size()));
    if (n < 0) {
      if (errno == EINTR) continue;
      return std::nullopt;
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

void write_file_atomic_with(const std::string& path, int mode,
                            const std::function<void(int fd)>& produce, bool durable) {
  auto slash = path.rfind('/');
  std::string dir = slash == std::string::npos ? "." : path.substr(0, slash);
  // Unique among this process's threads (the counter) and other processes (the pid).
  static std::atomic<uint64_t> seq{0};
  std::string tmp = path + ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(++seq);
  {
    UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode));
    if (!fd)
      throw_sys(errno == ENOENT || errno == EACCES ? Errc::invalid_argument : Errc::internal,
                "create " + tmp);
    try {
      produce(fd.get());
      if (::fchmod(fd.get(), static_cast<mode_t>(mode)) != 0) throw_sys("chmod " + tmp);
      if (durable && ::fsync(fd.get()) != 0) throw_sys("write " + tmp);
    } catch (...) {
      ::unlink(tmp.c_str());
      throw;
    }
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    throw_sys("rename " + tmp + " to " + path, err);
  }
  if (!durable) return;
  UniqueFd d(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (d) ::fsync(d.get());
}

void write_file_atomic(const std::string& path, const std::string& data, int mode) {
  write_file_atomic_with(path, mode, [&](int fd) { write_all(fd, data); });
}

void set_nonblocking(int fd, bool on) {
  int fl = ::fcntl(fd, F_GETFL);
  if (fl < 0) throw_sys("fcntl");
  fl = on ? (fl | O_NONBLOCK) : (fl & ~O_NONBLOCK);
  if (::fcntl(fd, F_SETFL, fl) != 0) throw_sys("fcntl");
}

void set_cloexec(int fd, bool on) {
  int fl = ::fcntl(fd, F_GETFD);
  if (fl < 0) throw_sys("fcntl");
  fl = on ? (fl | FD_CLOEXEC) : (fl & ~FD_CLOEXEC);
  if (::fcntl(fd, F_SETFD, fl) != 0) throw_sys("fcntl");
}

}  // namespace upstream
