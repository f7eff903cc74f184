// An owned file descriptor. Closed on destruction; moved, never copied.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <utility>

namespace upstream {

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  UniqueFd(UniqueFd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    if (this != &o) reset(std::exchange(o.fd_, -1));
    return *this;
  }
  ~UniqueFd() { reset(); }

  int get() const { return fd_; }
  explicit operator bool() const { return fd_ >= 0; }
  int release() { return std::exchange(fd_, -1); }
  void reset(int fd = -1);

 private:
  int fd_ = -1;
};

// Thin wrappers that throw Error with the path in the message.
UniqueFd open_or_throw(const std::string& path, int flags, int mode = 0);
UniqueFd openat_or_throw(int dirfd, const std::string& path, int flags, int mode = 0);

struct Pipe {
  UniqueFd read;
  UniqueFd write;
};
Pipe make_pipe(int flags);  // O_CLOEXEC and/or O_NONBLOCK

// Whole-buffer I/O that retries on EINTR and short counts. write_all throws; read_all returns
// what was read before EOF.
void write_all(int fd, const void* data, size_t len);
void write_all(int fd, const std::string& data);
std::string read_all(int fd, size_t limit = static_cast<size_t>(-1));
std::string read_file(const std::string& path, size_t limit = static_cast<size_t>(-1));
// As read_file, but nullopt (and no exception) when the file cannot be opened or read. For
// paths that may well be missing: the first exception a static binary throws costs ~5 ms.
std::optional<std::string> try_read_file(const std::string& path,
                                         size_t limit = static_cast<size_t>(-1));

// Writes `data` to `path` atomically: a temporary file in the same directory, fsync, rename.
void write_file_atomic(const std::string& path, const std::string& data, int mode = 0644);
// The same for contents `produce` writes into the descriptor it is given (streamed, any size): a
// temporary file next to `path`, renamed over it once complete; `durable`: synced first (file and
// directory), so a crash leaves the old file or the new one. Nothing is left on failure.
void write_file_atomic_with(const std::string& path, int mode,
                            const std::function<void(int fd)>& produce, bool durable = true);

void set_nonblocking(int fd, bool on);
void set_cloexec(int fd, bool on);

}  // namespace upstream
