#include "init/fileworker.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/fd.h"
#include "common/frame.h"
#include "common/strings.h"

namespace upstream::init {

namespace {

using nlohmann::json;

constexpr size_t kChunk = 256 * 1024;
constexpr size_t kMaxListing = 100'000;

const char* type_name(mode_t m) {
  if (S_ISREG(m)) return "file";
  if (S_ISDIR(m)) return "dir";
  if (S_ISLNK(m)) return "symlink";
  if (S_ISFIFO(m)) return "fifo";
  if (S_ISSOCK(m)) return "socket";
  if (S_ISCHR(m)) return "char";
  if (S_ISBLK(m)) return "block";
  return "unknown";
}

Errc errc_for(int err) {
  switch (err) {
    case ENOENT:
    case ENOTDIR:
      return Errc::not_found;
    case EEXIST:
    case ENOTEMPTY:
      return Errc::already_exists;
    case EACCES:
    case EPERM:
    case EROFS:
      return Errc::failed_precondition;
    case EISDIR:
    case EINVAL:
    case ENAMETOOLONG:
    case ELOOP:
    case EXDEV:
      return Errc::invalid_argument;
    case ENOSPC:
    case EDQUOT:
    case EFBIG:
      return Errc::resource_exhausted;
    default:
      return Errc::internal;
  }
}

[[noreturn]] void fail(const std::string& what, const std::string& path, int err = errno) {
  throw Error(errc_for(err), what + " " + path + ": " + errno_string(err), err);
}

json info_of(const std::string& name, const struct stat& st, const std::string& target) {
  json j = {
      {"name", name},
      {"type", type_name(st.st_mode)},
      {"mode", st.st_mode & 07777},
      {"size", static_cast<uint64_t>(st.st_size)},
      {"mtime_ms", static_cast<int64_t>(st.st_mtim.tv_sec) * 1000 + st.st_mtim.tv_nsec / 1'000'000},
      {"uid", st.st_uid},
      {"gid", st.st_gid}};
  if (S_ISLNK(st.st_mode)) j["target"] = target;
  return j;
}

std::string read_link(int dirfd, const std::string& path) {
  char buf[4096];
  ssize_t n = ::readlinkat(dirfd, path.c_str(), buf, sizeof buf);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
}

std::string base_name(const std::string& path) {
  auto s = path.find_last_not_of('/');
  if (s == std::string::npos) return "/";
  auto b = path.rfind('/', s);
  return path.substr(b == std::string::npos ? 0 : b + 1,
                     s - (b == std::string::npos ? 0 : b + 1) + 1);
}

std::string parent_of(const std::string& path) {
  auto s = path.find_last_not_of('/');
  if (s == std::string::npos) return "/";
  auto b = path.rfind('/', s);
  if (b == std::string::npos) return ".";
  if (b == 0) return "/";
  return path.substr(0, b);
}

// A relative entry path from an upload: non-empty components, none "." or "..".
bool valid_relative(const std::string& p) {
  if (p.empty() || p[0] == '/') return false;
  for (const auto& c : split(p, '/'))
    if (c.empty() || c == "." || c == "..") return false;
  return true;
}

// Opens `rel` beneath dirfd without following any symlink, as tar extraction must.
int open_beneath(int dirfd, const std::string& rel, int flags, int mode = 0) {
  open_how how{};
  how.flags = static_cast<uint64_t>(flags | O_CLOEXEC);
  how.mode = static_cast<uint64_t>(mode);
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
  return static_cast<int>(::syscall(SYS_openat2, dirfd, rel.c_str(), &how, sizeof how));
}

// Opens (making it if needed, as tar does for entries whose parents are not in the archive)
// the directory `rel` beneath dirfd, one component at a time, following no symlinks.
int open_parent(int dirfd, const std::string& rel) {
  UniqueFd cur(::fcntl(dirfd, F_DUPFD_CLOEXEC, 3));
  for (const auto& c : split(rel, '/')) {
    int next = open_beneath(cur.get(), c, O_RDONLY | O_DIRECTORY);
    if (next < 0 && errno == ENOENT) {
      if (::mkdirat(cur.get(), c.c_str(), 0755) != 0 && errno != EEXIST) return -1;
      next = open_beneath(cur.get(), c, O_RDONLY | O_DIRECTORY);
    }
    if (next < 0) return -1;
    cur.reset(next);
  }
  return cur.release();
}

void send_data_from(int fd) {
  std::vector<char> buf(kChunk);
  uint64_t total = 0;
  for (;;) {
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      frame::write_header(1, {{"end", true}, {"error", errno_string(errno)}});
      return;
    }
    if (n == 0) break;
    frame::write_header(1, {{"data", n}});
    write_all(1, buf.data(), static_cast<size_t>(n));
    total += static_cast<uint64_t>(n);
  }
  frame::write_header(1, {{"end", true}, {"size", total}});
}

// Reads data frames until {"end"}; each chunk goes to sink (may be -1 to discard).
uint64_t receive_data_to(int sink) {
  std::vector<char> buf(kChunk);
  uint64_t total = 0;
  int err = 0;
  for (;;) {
    auto h = frame::read_header(0);
    if (!h) throw Error(Errc::unavailable, "upload ended early");
    if (h->value("end", false)) break;
    size_t n = h->value("data", size_t{0});
    if (n > buf.size()) buf.resize(n);
    frame::read_exact(0, buf.data(), n);
    if (sink >= 0 && !err) {
      try {
        write_all(sink, buf.data(), n);
      } catch (const Error& e) {
        err = e.sys_errno() ? e.sys_errno() : EIO;
      }
    }
    total += n;
  }
  if (err) {
    errno = err;
    throw Error(errc_for(err), "write: " + errno_string(err), err);
  }
  return total;
}

// What a file worker running as root creates belongs to the owner of the directory it is made
// in, so that files copied into /home/user are user's, as if user had made them (and those copied
// into /etc stay root's). A worker running as another user makes its own files, as any process.
bool inherit_owner() { return ::geteuid() == 0; }

// Gives `name` (below dirfd) the owner of dirfd's directory; symlinks themselves, not their
// targets. Best effort: the entry exists either way. (Files are given theirs through their open
// descriptor, so a name swapped meanwhile changes nothing else.)
void take_parent_owner(int dirfd, const char* name) {
  if (!inherit_owner()) return;
  struct stat parent;
  if (::fstat(dirfd, &parent) != 0) return;
  (void)!::fchownat(dirfd, name, parent.st_uid, parent.st_gid, AT_SYMLINK_NOFOLLOW);
}
void take_parent_owner_fd(int dirfd, int fd) {
  if (!inherit_owner()) return;
  struct stat parent;
  if (::fstat(dirfd, &parent) == 0) (void)!::fchown(fd, parent.st_uid, parent.st_gid);
}

void mkdir_p(const std::string& path, mode_t mode) {
  std::string cur = path[0] == '/' ? "/" : "";
  struct stat parent;
  bool have_parent = ::stat(cur.empty() ? "." : cur.c_str(), &parent) == 0;
  for (const auto& c : split(path, '/')) {
    if (c.empty()) continue;
    if (!cur.empty() && cur.back() != '/') cur += '/';
    cur += c;
    bool made = ::mkdir(cur.c_str(), mode) == 0;
    if (!made && errno != EEXIST) fail("mkdir", cur);
    if (made && have_parent && inherit_owner())
      (void)!::lchown(cur.c_str(), parent.st_uid, parent.st_gid);
    struct stat st;
    if (::stat(cur.c_str(), &st) != 0) fail("stat", cur);
    if (!S_ISDIR(st.st_mode)) fail("mkdir", cur, ENOTDIR);
    parent = st;
    have_parent = true;
  }
}

void remove_tree_at(int dirfd, const std::string& name) {
  struct stat st;
  if (::fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) fail("stat", name);
  if (!S_ISDIR(st.st_mode)) {
    if (::unlinkat(dirfd, name.c_str(), 0) != 0) fail("remove", name);
    return;
  }
  int fd = ::openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) fail("open", name);
  DIR* d = ::fdopendir(fd);
  if (!d) {
    ::close(fd);
    fail("open", name);
  }
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d))
    if (std::strcmp(e->d_name, ".") && std::strcmp(e->d_name, "..")) names.emplace_back(e->d_name);
  for (const auto& n : names) remove_tree_at(::dirfd(d), n);
  ::closedir(d);
  if (::unlinkat(dirfd, name.c_str(), AT_REMOVEDIR) != 0) fail("remove", name);
}

void copy_file_contents(int in, int out) {
  std::vector<char> buf(kChunk);
  for (;;) {
    ssize_t n = ::read(in, buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      fail("read", "");
    }
    if (n == 0) return;
    write_all(out, buf.data(), static_cast<size_t>(n));
  }
}

// Copy for moves between mounts (the box's /usr, /etc, /var and / are separate overlays).
void copy_tree(const std::string& from, const std::string& to) {
  struct stat st;
  if (::lstat(from.c_str(), &st) != 0) fail("stat", from);
  if (S_ISDIR(st.st_mode)) {
    if (::mkdir(to.c_str(), st.st_mode & 07777) != 0) fail("mkdir", to);
    DIR* d = ::opendir(from.c_str());
    if (!d) fail("open", from);
    std::vector<std::string> names;
    while (dirent* e = ::readdir(d))
      if (std::strcmp(e->d_name, ".") && std::strcmp(e->d_name, ".."))
        names.emplace_back(e->d_name);
    ::closedir(d);
    for (const auto& n : names) copy_tree(from + "/" + n, to + "/" + n);
  } else if (S_ISLNK(st.st_mode)) {
    std::string target = read_link(AT_FDCWD, from);
    if (::symlink(target.c_str(), to.c_str()) != 0) fail("symlink", to);
  } else if (S_ISREG(st.st_mode)) {
    UniqueFd in(::open(from.c_str(), O_RDONLY | O_CLOEXEC));
    if (!in) fail("open", from);
    UniqueFd out(::open(to.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, st.st_mode & 07777));
    if (!out) fail("create", to);
    copy_file_contents(in.get(), out.get());
  } else {
    fail("copy", from, EINVAL);
  }
  ::lchown(to.c_str(), st.st_uid, st.st_gid);
}

json op_stat(const json& req) {
  std::string path = req.at("path");
  struct stat st;
  bool follow = req.value("follow", false);
  if ((follow ? ::stat(path.c_str(), &st) : ::lstat(path.c_str(), &st)) != 0) fail("stat", path);
  return {{"ok", true}, {"info", info_of(base_name(path), st, read_link(AT_FDCWD, path))}};
}

json op_list(const json& req) {
  std::string path = req.at("path");
  int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) fail("list", path);
  DIR* d = ::fdopendir(fd);
  if (!d) {
    ::close(fd);
    fail("list", path);
  }
  json entries = json::array();
  bool truncated = false;
  while (dirent* e = ::readdir(d)) {
    if (!std::strcmp(e->d_name, ".") || !std::strcmp(e->d_name, "..")) continue;
    if (entries.size() >= kMaxListing) {
      truncated = true;
      break;
    }
    struct stat st;
    if (::fstatat(::dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
    entries.push_back(
        info_of(e->d_name, st, S_ISLNK(st.st_mode) ? read_link(::dirfd(d), e->d_name) : ""));
  }
  ::closedir(d);
  return {{"ok", true}, {"entries", entries}, {"truncated", truncated}};
}

void op_read(const json& req) {
  std::string path = req.at("path");
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) fail("read", path);
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) fail("stat", path);
  if (S_ISDIR(st.st_mode)) fail("read", path, EISDIR);
  frame::write_header(1, {{"ok", true}, {"info", info_of(base_name(path), st, "")}});
  send_data_from(fd.get());
}

json op_write(const json& req) {
  std::string path = req.at("path");
  std::string dir = parent_of(path), name = base_name(path);
  int err = 0;
  std::string what;
  if (req.value("mkdirs", false)) {
    try {
      mkdir_p(dir, 0755);
    } catch (const Error& e) {
      err = e.sys_errno() ? e.sys_errno() : EIO;
      what = e.what();
    }
  }
  mode_t mode = req.contains("mode") ? static_cast<mode_t>(req["mode"].get<int>() & 07777) : 0644;
  struct stat old;
  bool replacing = ::stat(path.c_str(), &old) == 0;
  if (replacing && S_ISDIR(old.st_mode) && !err) {
    err = EISDIR;
    what = "write " + path + ": " + errno_string(EISDIR);
  }
  if (replacing && !req.contains("mode")) mode = old.st_mode & 07777;
  std::string tmp = dir + "/." + name + ".upstream-" + random_hex(8);
  UniqueFd out;
  if (!err) {
    out.reset(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (!out) {
      err = errno;
      what = "write " + path + ": " + errno_string(err);
    }
  }
  uint64_t size = 0;
  try {
    size = receive_data_to(out ? out.get() : -1);
  } catch (const Error& e) {
    if (out) ::unlink(tmp.c_str());
    if (e.code() == Errc::unavailable) throw;
    throw Error(e.code(), "write " + path + ": " + errno_string(e.sys_errno()), e.sys_errno());
  }
  if (err) throw Error(errc_for(err), what, err);
  // Atomic replace: readers see the old file or the new one, never a partial one.
  // A replaced file keeps its owner when we are allowed to give it back (we are, as root).
  if (replacing) {
    (void)!::fchown(out.get(), old.st_uid, old.st_gid);
  } else if (inherit_owner()) {
    struct stat d;
    if (::stat(dir.c_str(), &d) == 0) (void)!::fchown(out.get(), d.st_uid, d.st_gid);
  }
  if (::fchmod(out.get(), mode) != 0 || ::rename(tmp.c_str(), path.c_str()) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    fail("write", path, e);
  }
  return {{"ok", true}, {"size", size}};
}

json op_mkdir(const json& req) {
  std::string path = req.at("path");
  mode_t mode = static_cast<mode_t>(req.value("mode", 0755) & 07777);
  if (req.value("parents", true)) {
    mkdir_p(path, mode);
  } else if (::mkdir(path.c_str(), mode) != 0) {
    fail("mkdir", path);
  } else {
    UniqueFd parent(::open(parent_of(path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (parent) take_parent_owner(parent.get(), base_name(path).c_str());
  }
  return {{"ok", true}};
}

json op_remove(const json& req) {
  std::string path = req.at("path");
  if (path == "/") throw Error(Errc::invalid_argument, "refusing to remove /");
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) fail("remove", path);
  if (S_ISDIR(st.st_mode)) {
    if (req.value("recursive", false))
      remove_tree_at(AT_FDCWD, path);
    else if (::rmdir(path.c_str()) != 0)
      fail("remove", path);
  } else if (::unlink(path.c_str()) != 0) {
    fail("remove", path);
  }
  return {{"ok", true}};
}

json op_move(const json& req) {
  std::string from = req.at("from"), to = req.at("to");
  bool overwrite = req.value("overwrite", true);
  unsigned flags = overwrite ? 0 : RENAME_NOREPLACE;
  if (::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), flags) == 0) return {{"ok", true}};
  if (errno != EXDEV) fail("move " + from + " to", to);
  struct stat st;
  if (::lstat(to.c_str(), &st) == 0) {
    if (!overwrite) fail("move " + from + " to", to, EEXIST);
    remove_tree_at(AT_FDCWD, to);
  }
  copy_tree(from, to);
  remove_tree_at(AT_FDCWD, from);
  return {{"ok", true}};
}

void walk_emit(int dirfd, const std::string& name, const std::string& rel, uint64_t& count) {
  struct stat st;
  if (::fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return;  // vanished meanwhile
  json info = info_of(base_name(rel), st, S_ISLNK(st.st_mode) ? read_link(dirfd, name) : "");
  info["path"] = rel;
  count++;
  if (S_ISREG(st.st_mode)) {
    UniqueFd fd(::openat(dirfd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd) {
      info["error"] = errno_string(errno);
      frame::write_header(1, {{"entry", info}});
      return;
    }
    frame::write_header(1, {{"entry", info}});
    send_data_from(fd.get());
    return;
  }
  frame::write_header(1, {{"entry", info}});
  if (S_ISDIR(st.st_mode)) {
    int fd = ::openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return;
    DIR* d = ::fdopendir(fd);
    if (!d) {
      ::close(fd);
      return;
    }
    std::vector<std::string> names;
    while (dirent* e = ::readdir(d))
      if (std::strcmp(e->d_name, ".") && std::strcmp(e->d_name, ".."))
        names.emplace_back(e->d_name);
    for (const auto& n : names) walk_emit(::dirfd(d), n, rel + "/" + n, count);
    ::closedir(d);
  }
}

void op_walk(const json& req) {
  std::string path = req.at("path");
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) fail("download", path);
  frame::write_header(1, {{"ok", true}, {"type", type_name(st.st_mode)}});
  uint64_t count = 0;
  std::string name = base_name(path);
  UniqueFd parent(::open(parent_of(path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (parent) walk_emit(parent.get(), name, name, count);
  frame::write_header(1, {{"done", true}, {"count", count}});
}

json op_put(const json& req) {
  std::string path = req.at("path");
  int err = 0;
  std::string what;
  try {
    mkdir_p(path, 0755);
  } catch (const Error& e) {
    err = e.sys_errno() ? e.sys_errno() : EIO;
    what = e.what();
  }
  UniqueFd root;
  if (!err) {
    root.reset(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!root) {
      err = errno;
      what = "open " + path + ": " + errno_string(err);
    }
  }
  uint64_t count = 0;
  for (;;) {
    auto h = frame::read_header(0);
    if (!h) throw Error(Errc::unavailable, "upload ended early");
    if (h->value("done", false)) break;
    const json& e = h->at("entry");
    std::string rel = e.at("path");
    std::string type = e.at("type");
    mode_t mode = static_cast<mode_t>(e.value("mode", 0644) & 07777);
    if (!err && !valid_relative(rel)) {
      err = EINVAL;
      what = "upload entry '" + rel + "' is not a plain relative path";
    }
    std::string parent = rel.find('/') == std::string::npos ? "." : rel.substr(0, rel.rfind('/'));
    std::string leaf = rel.substr(rel.rfind('/') == std::string::npos ? 0 : rel.rfind('/') + 1);
    UniqueFd pdir;
    if (!err) {
      pdir.reset(parent == "." ? ::fcntl(root.get(), F_DUPFD_CLOEXEC, 3)
                               : open_parent(root.get(), parent));
      if (!pdir) {
        err = errno;
        what = "upload " + rel + ": " + errno_string(err);
      }
    }
    if (type == "file") {
      UniqueFd out;
      struct stat was;  // a file replaced keeps its owner
      bool replacing = false;
      if (!err) {
        replacing = ::fstatat(pdir.get(), leaf.c_str(), &was, AT_SYMLINK_NOFOLLOW) == 0 &&
                    S_ISREG(was.st_mode);
        ::unlinkat(pdir.get(), leaf.c_str(), 0);
        out.reset(::openat(pdir.get(), leaf.c_str(),
                           O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode));
        if (!out) {
          err = errno;
          what = "upload " + rel + ": " + errno_string(err);
        }
      }
      try {
        receive_data_to(out ? out.get() : -1);
      } catch (const Error& x) {
        if (x.code() == Errc::unavailable) throw;
        if (!err) {
          err = x.sys_errno();
          what = "upload " + rel + ": " + errno_string(err);
        }
      }
      if (out) {
        // Before the mode: chown clears set-id bits.
        if (replacing && inherit_owner())
          (void)!::fchown(out.get(), was.st_uid, was.st_gid);
        else
          take_parent_owner_fd(pdir.get(), out.get());
        ::fchmod(out.get(), mode);
        if (e.contains("mtime_ms")) {
          int64_t ms = e["mtime_ms"];
          timespec ts[2] = {{0, UTIME_OMIT}, {ms / 1000, (ms % 1000) * 1'000'000}};
          ::futimens(out.get(), ts);
        }
      }
    } else if (!err && type == "dir") {
      if (::mkdirat(pdir.get(), leaf.c_str(), mode) == 0) {
        take_parent_owner(pdir.get(), leaf.c_str());
      } else if (errno != EEXIST) {
        err = errno;
        what = "upload " + rel + ": " + errno_string(err);
      }
    } else if (!err && type == "symlink") {
      std::string target = e.value("target", std::string());
      ::unlinkat(pdir.get(), leaf.c_str(), 0);
      if (::symlinkat(target.c_str(), pdir.get(), leaf.c_str()) != 0) {
        err = errno;
        what = "upload " + rel + ": " + errno_string(err);
      } else {
        take_parent_owner(pdir.get(), leaf.c_str());
      }
    } else if (!err && type == "hardlink") {
      std::string target = e.value("target", std::string());
      if (!valid_relative(target)) {
        err = EINVAL;
        what = "upload " + rel + ": hard link target '" + target + "' is not a plain relative path";
      } else {
        ::unlinkat(pdir.get(), leaf.c_str(), 0);
        if (::linkat(root.get(), target.c_str(), pdir.get(), leaf.c_str(), 0) != 0) {
          err = errno;
          what = "upload " + rel + ": " + errno_string(err);
        }
      }
    } else if (!err && type != "dir" && type != "symlink" && type != "hardlink") {
      err = EINVAL;
      what = "upload " + rel + ": unsupported entry type '" + type + "'";
    }
    count++;
  }
  if (err) throw Error(errc_for(err), what, err);
  return {{"ok", true}, {"count", count}};
}

}  // namespace

int fileworker_main() {
  for (;;) {
    std::optional<json> req;
    try {
      req = frame::read_header(0);
    } catch (const Error&) {
      return 1;
    }
    if (!req) return 0;
    std::string op = req->value("op", "");
    try {
      json reply;
      if (op == "stat")
        reply = op_stat(*req);
      else if (op == "list")
        reply = op_list(*req);
      else if (op == "read") {
        op_read(*req);
        continue;
      } else if (op == "write")
        reply = op_write(*req);
      else if (op == "mkdir")
        reply = op_mkdir(*req);
      else if (op == "remove")
        reply = op_remove(*req);
      else if (op == "move")
        reply = op_move(*req);
      else if (op == "walk") {
        op_walk(*req);
        continue;
      } else if (op == "put")
        reply = op_put(*req);
      else
        throw Error(Errc::invalid_argument, "unknown file operation '" + op + "'");
      frame::write_header(1, reply);
    } catch (const Error& e) {
      if (e.code() == Errc::unavailable && std::string(e.what()).find("ended") != std::string::npos)
        return 1;
      try {
        frame::write_header(1, {{"ok", false}, {"error", e.what()}, {"kind", errc_name(e.code())}});
      } catch (const Error&) {
        return 1;
      }
    } catch (const std::exception& e) {
      frame::write_header(1, {{"ok", false}, {"error", e.what()}, {"kind", "invalid_argument"}});
    }
  }
}

}  // namespace upstream::init
