#include "storage/layers.h"

#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <functional>
#include <memory>

#include "common/digest.h"
#include "common/error.h"
#include "common/fd.h"
#include "common/proc.h"
#include "common/strings.h"

namespace upstream::storage {

namespace {

std::vector<std::string> sorted_entries(int dirfd, const std::string& what) {
  int fd = ::openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw_sys("open " + what);
  DIR* d = ::fdopendir(fd);
  if (!d) {
    ::close(fd);
    throw_sys("read " + what);
  }
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d))
    if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0)
      names.emplace_back(e->d_name);
  ::closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

// Extended attributes of an entry, sorted by name.
std::vector<std::pair<std::string, std::string>> xattrs_of(const std::string& path) {
  std::vector<std::pair<std::string, std::string>> out;
  ssize_t n = ::llistxattr(path.c_str(), nullptr, 0);
  if (n <= 0) return out;
  std::string names(static_cast<size_t>(n), '\0');
  n = ::llistxattr(path.c_str(), names.data(), names.size());
  if (n <= 0) return out;
  names.resize(static_cast<size_t>(n));
  for (const auto& name : split(names, '\0')) {
    if (name.empty()) continue;
    ssize_t len = ::lgetxattr(path.c_str(), name.c_str(), nullptr, 0);
    if (len < 0) continue;
    std::string value(static_cast<size_t>(len), '\0');
    len = ::lgetxattr(path.c_str(), name.c_str(), value.data(), value.size());
    if (len < 0) continue;
    value.resize(static_cast<size_t>(len));
    out.emplace_back(name, value);
  }
  std::sort(out.begin(), out.end());
  return out;
}

// Visits every entry below `dir` in name order, parents first. Sockets are skipped (they
// cannot be archived and mean nothing in a snapshot).
void walk(const std::string& dir, const std::string& rel,
          const std::function<void(const std::string& rel, const std::string& abs,
                                   const struct stat&)>& visit) {
  UniqueFd fd = open_or_throw(dir + (rel.empty() ? "" : "/" + rel), O_RDONLY | O_DIRECTORY);
  struct stat top;
  if (::fstat(fd.get(), &top) != 0) throw_sys("stat " + dir);
  for (const auto& name : sorted_entries(fd.get(), dir + "/" + rel)) {
    std::string r = rel.empty() ? name : rel + "/" + name;
    std::string abs = dir + "/" + r;
    struct stat st;
    if (::fstatat(fd.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) throw_sys("stat " + abs);
    if (S_ISSOCK(st.st_mode)) continue;
    visit(r, abs, st);
    if (S_ISDIR(st.st_mode) && st.st_dev == top.st_dev) walk(dir, r, visit);
  }
}

char type_char(mode_t m) {
  if (S_ISREG(m)) return 'f';
  if (S_ISDIR(m)) return 'd';
  if (S_ISLNK(m)) return 'l';
  if (S_ISCHR(m)) return 'c';
  if (S_ISBLK(m)) return 'b';
  if (S_ISFIFO(m)) return 'p';
  return '?';
}

std::string owner_tag() {
  pid_t pid = ::getpid();
  return std::to_string(pid) + "-" + std::to_string(process_start_time(pid).value_or(0));
}

}  // namespace

LayerInfo digest_tree(const std::string& dir) {
  Sha256 h;
  LayerInfo info;
  std::vector<char> buf(1 << 20);
  walk(dir, "", [&](const std::string& rel, const std::string& abs, const struct stat& st) {
    info.files++;
    // Directory and symlink times are left out: they change when a layer is staged or unpacked
    // without any change of content.
    std::string rec = rel;
    rec.push_back('\0');
    rec += type_char(st.st_mode);
    rec += " " + std::to_string(st.st_mode & 07777) + " " + std::to_string(st.st_uid) + " " +
           std::to_string(st.st_gid);
    if (S_ISREG(st.st_mode))
      rec += " " + std::to_string(st.st_mtim.tv_sec) + "." + std::to_string(st.st_mtim.tv_nsec) +
             " " + std::to_string(st.st_size);
    if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode))
      rec += " " + std::to_string(major(st.st_rdev)) + ":" + std::to_string(minor(st.st_rdev));
    if (S_ISLNK(st.st_mode)) {
      std::string target(static_cast<size_t>(st.st_size) + 1, '\0');
      ssize_t n = ::readlink(abs.c_str(), target.data(), target.size());
      if (n < 0) throw_sys("readlink " + abs);
      target.resize(static_cast<size_t>(n));
      rec += " ->" + target;
    }
    for (const auto& [k, v] : xattrs_of(abs)) {
      rec.push_back('\0');
      rec += k + "=" + std::to_string(v.size()) + ":" + v;
    }
    rec.push_back('\n');
    h.add(std::to_string(rec.size()) + ":");
    h.add(rec);
    if (S_ISREG(st.st_mode)) {
      info.bytes += static_cast<uint64_t>(st.st_size);
      UniqueFd fd = open_or_throw(abs, O_RDONLY | O_NOFOLLOW);
      uint64_t total = 0;
      for (;;) {
        ssize_t n = ::read(fd.get(), buf.data(), buf.size());
        if (n < 0) {
          if (errno == EINTR) continue;
          throw_sys("read " + abs);
        }
        if (n == 0) break;
        total += static_cast<uint64_t>(n);
        h.add(std::string_view(buf.data(), static_cast<size_t>(n)));
      }
      if (total != static_cast<uint64_t>(st.st_size))
        throw Error(Errc::internal, abs + " changed while it was read");
    }
  });
  info.digest = h.hex();
  return info;
}

LayerStore::LayerStore(const Pool& pool) : pool_(pool), root_(pool.layers_root()) {
  make_dirs(root_, 0700);
}

bool LayerStore::exists(const std::string& digest) const {
  struct stat st;
  return is_digest(digest) && ::stat(path(digest).c_str(), &st) == 0;
}

std::vector<std::string> LayerStore::list() const {
  std::vector<std::string> out;
  DIR* d = ::opendir(root_.c_str());
  if (!d) return out;
  while (dirent* e = ::readdir(d))
    if (is_digest(e->d_name)) out.emplace_back(e->d_name);
  ::closedir(d);
  return out;
}

std::string LayerStore::new_staging() const {
  std::string p = root_ + "/.staging-" + owner_tag() + "-" + random_hex(8);
  pool_.make_tree(p);
  return p;
}

std::string LayerStore::stage_volume(const std::string& box_id,
                                     const std::vector<std::string>& drop) const {
  std::string p = root_ + "/.staging-" + owner_tag() + "-" + random_hex(8);
  pool_.copy_volume(box_id, p);
  try {
    for (const auto& name : sorted_entries(open_or_throw(p, O_RDONLY | O_DIRECTORY).get(), p)) {
      if (name == "fs") continue;
      // rootfs (a mount point) and logs (a nested volume: an empty directory in the copy).
      remove_tree(p + "/" + name);
    }
    std::string fs = p + "/fs";
    for (const auto& ov : sorted_entries(open_or_throw(fs, O_RDONLY | O_DIRECTORY).get(), fs)) {
      struct stat st;
      if (::lstat((fs + "/" + ov + "/upper").c_str(), &st) == 0 &&
          ::rename((fs + "/" + ov + "/upper").c_str(), (p + "/" + ov).c_str()) != 0)
        throw_sys("stage " + fs + "/" + ov);
    }
    remove_tree(fs);
    for (const auto& d : drop) ::unlink((p + "/" + d).c_str());
    // Overlay's bookkeeping about the layers below (file handles of the lower filesystems, the
    // upper layer's identity) means nothing once this is a layer of its own.
    static const char* kDropped[] = {"trusted.overlay.origin", "trusted.overlay.impure",
                                     "trusted.overlay.uuid"};
    auto strip = [](const std::string& path) {
      for (const char* x : kDropped) ::lremovexattr(path.c_str(), x);
    };
    strip(p);
    walk(p, "", [&](const std::string&, const std::string& abs, const struct stat& st) {
      if (!S_ISLNK(st.st_mode)) strip(abs);
    });
  } catch (...) {
    discard(p);
    throw;
  }
  return p;
}

LayerInfo LayerStore::commit(const std::string& staging, const std::string& expect) const {
  LayerInfo info;
  try {
    info = digest_tree(staging);
    if (!expect.empty() && info.digest != expect)
      throw Error(Errc::invalid_argument,
                  "layer " + expect + " is corrupt: its contents do not match its digest");
  } catch (...) {
    discard(staging);
    throw;
  }
  if (exists(info.digest)) {
    discard(staging);
    return info;
  }
  {
    // Everything in the layer reaches the disk before it is given its name.
    UniqueFd fd = open_or_throw(staging, O_RDONLY | O_DIRECTORY);
    if (::syncfs(fd.get()) != 0) throw_sys("sync " + staging);
  }
  if (::rename(staging.c_str(), path(info.digest).c_str()) != 0) {
    int err = errno;
    discard(staging);
    if (!exists(info.digest)) throw_sys("store layer " + info.digest, err);
    return info;
  }
  pool_.seal_tree(path(info.digest));
  UniqueFd dir = open_or_throw(root_, O_RDONLY | O_DIRECTORY);
  ::fsync(dir.get());
  return info;
}

void LayerStore::remove(const std::string& digest) const {
  if (!is_digest(digest)) return;
  // Renamed first, so that a layer is never seen half-deleted under its name.
  std::string doomed = root_ + "/.staging-" + owner_tag() + "-rm-" + digest.substr(0, 16);
  if (::rename(path(digest).c_str(), doomed.c_str()) != 0) {
    if (errno == ENOENT) return;
    throw_sys("remove layer " + digest);
  }
  pool_.remove_tree_at(doomed);
}

void LayerStore::remove_stale_staging() const {
  DIR* d = ::opendir(root_.c_str());
  if (!d) return;
  std::vector<std::string> stale;
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (!starts_with(name, ".staging-")) continue;
    auto parts = split(name.substr(9), '-');
    if (parts.size() < 3) continue;
    pid_t pid = static_cast<pid_t>(std::atoi(parts[0].c_str()));
    auto start = process_start_time(pid);
    if (!start || std::to_string(*start) != parts[1]) stale.push_back(root_ + "/" + name);
  }
  ::closedir(d);
  for (const auto& p : stale) {
    try {
      pool_.remove_tree_at(p);
    } catch (const Error&) {
    }
  }
}

void write_layer_tar(archive* a, const std::string& dir, const std::string& prefix) {
  auto fail = [&](const std::string& what) {
    throw Error(Errc::internal, "archive " + what + ": " + archive_error_string(a));
  };
  std::unique_ptr<archive_entry, decltype(&archive_entry_free)> e(archive_entry_new(),
                                                                  archive_entry_free);
  std::vector<char> buf(1 << 20);
  auto header = [&](const std::string& rel, const std::string& abs, const struct stat& st) {
    archive_entry_clear(e.get());
    archive_entry_copy_stat(e.get(), &st);
    archive_entry_set_nlink(e.get(), 1);  // every file is stored whole (no hard links)
    archive_entry_copy_pathname(e.get(), (prefix + rel).c_str());
    if (S_ISLNK(st.st_mode)) {
      std::string target(static_cast<size_t>(st.st_size) + 1, '\0');
      ssize_t n = ::readlink(abs.c_str(), target.data(), target.size());
      if (n < 0) throw_sys("readlink " + abs);
      target.resize(static_cast<size_t>(n));
      archive_entry_copy_symlink(e.get(), target.c_str());
    }
    if (!S_ISREG(st.st_mode)) archive_entry_set_size(e.get(), 0);
    for (const auto& [k, v] : xattrs_of(abs))
      archive_entry_xattr_add_entry(e.get(), k.c_str(), v.data(), v.size());
    if (archive_write_header(a, e.get()) != ARCHIVE_OK) fail(rel);
    if (S_ISREG(st.st_mode)) {
      UniqueFd fd = open_or_throw(abs, O_RDONLY | O_NOFOLLOW);
      for (;;) {
        ssize_t n = ::read(fd.get(), buf.data(), buf.size());
        if (n < 0) {
          if (errno == EINTR) continue;
          throw_sys("read " + abs);
        }
        if (n == 0) break;
        if (archive_write_data(a, buf.data(), static_cast<size_t>(n)) < 0) fail(rel);
      }
    }
  };
  struct stat top;
  if (::lstat(dir.c_str(), &top) != 0) throw_sys("stat " + dir);
  // The layer's own directory, with the prefix as its name.
  archive_entry_clear(e.get());
  archive_entry_copy_stat(e.get(), &top);
  archive_entry_copy_pathname(e.get(), prefix.c_str());
  if (archive_write_header(a, e.get()) != ARCHIVE_OK) fail(prefix);
  walk(dir, "", header);
}

}  // namespace upstream::storage
