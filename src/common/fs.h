// Filesystem pieces every layer uses: directories made and removed, directories listed, and lock
// files.
#pragma once

#include <dirent.h>

#include <optional>
#include <string>
#include <vector>

#include "common/fd.h"

namespace upstream {

// Creates `path` and missing parents with the given mode.
void make_dirs(const std::string& path, unsigned mode = 0755);

// Removes a directory tree without following symlinks or crossing into other mounts.
// Missing paths are fine.
void remove_tree(const std::string& path);

// The entries of a directory (without "." and ".."), read as they come: for (auto& e : Dir(p)).
// A directory that cannot be opened reads as empty when `missing_ok`, else throws naming it.
class Dir {
 public:
  struct Entry {
    std::string name;
    unsigned char type;  // DT_* (DT_UNKNOWN on filesystems that do not say)
  };
  explicit Dir(const std::string& path, bool missing_ok = true);
  ~Dir();
  Dir(const Dir&) = delete;
  Dir& operator=(const Dir&) = delete;
  std::vector<Entry> entries();  // all of them, in the order the directory gives

 private:
  DIR* d_ = nullptr;
};

// The names in a directory ending in `suffix` whose rest is a decimal number (slot files).
std::vector<uint32_t> numbered_files(const std::string& dir, const std::string& suffix);

// Holds an exclusive flock on a lock file for its lifetime.
class FileLock {
 public:
  FileLock() = default;
  // Blocks until the lock is held; with timeout_ms >= 0, throws Error(timeout) after that long.
  FileLock(const std::string& path, int timeout_ms = -1);
  static std::optional<FileLock> try_lock(const std::string& path);
  FileLock(FileLock&&) = default;
  FileLock& operator=(FileLock&&) = default;
  int fd() const { return fd_.get(); }

 private:
  UniqueFd fd_;
};

}  // namespace upstream
