#include "engine/host_tree.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <vector>

#include "common/error.h"
#include "common/fd.h"
#include "common/strings.h"

namespace upstream {

bool plain_relative(const std::string& p) {
  if (p.empty() || p[0] == '/') return false;
  for (const auto& c : split(p, '/'))
    if (c.empty() || c == "." || c == "..") return false;
  return true;
}

int open_beneath(int dirfd, const std::string& rel, int flags, int mode) {
  open_how how{};
  how.flags = static_cast<uint64_t>(flags | O_CLOEXEC);
  how.mode = static_cast<uint64_t>(mode);
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
  return static_cast<int>(::syscall(SYS_openat2, dirfd, rel.c_str(), &how, sizeof how));
}

CopyOutPlan plan_copy_out(const std::string& host_path, bool src_is_dir) {
  CopyOutPlan p;
  p.src_is_dir = src_is_dir;
  struct stat st;
  p.dest_is_dir = ::stat(host_path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
  p.root_dir = host_path;
  if (!p.dest_is_dir) {
    // The copy takes the destination's name.
    auto slash = host_path.find_last_of('/');
    std::string parent =
        slash == std::string::npos ? "." : (slash == 0 ? "/" : host_path.substr(0, slash));
    if (::stat(parent.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
      throw Error(Errc::not_found, "destination directory " + parent + " does not exist");
    if (src_is_dir) {
      if (::mkdir(host_path.c_str(), 0755) != 0 && errno != EEXIST) throw_sys("mkdir " + host_path);
      p.strip_first = true;
    } else {
      p.root_dir = parent;
    }
    p.file_name = host_path.substr(host_path.find_last_of('/') + 1);
  }
  return p;
}

std::optional<std::string> CopyOutPlan::map(const std::string& rel) const {
  if (strip_first) {
    auto slash = rel.find('/');
    if (slash == std::string::npos) return std::nullopt;  // the directory itself, made above
    return rel.substr(slash + 1);
  }
  if (!dest_is_dir && !src_is_dir) return file_name;
  return rel;
}

CopyInPlan plan_copy_in(
    const std::string& host_path, const std::string& box_dest,
    const std::function<std::optional<std::string>(const std::string&)>& box_type) {
  struct stat st;
  if (::lstat(host_path.c_str(), &st) != 0) throw_sys(Errc::not_found, "local path " + host_path);
  CopyInPlan p;
  auto dest = box_type(box_dest);
  std::string base = host_path.substr(host_path.find_last_of('/') + 1);
  if (base.empty() || base == "." || base == "..") {
    char buf[4096];
    base = ::realpath(host_path.c_str(), buf)
               ? std::string(buf).substr(std::string(buf).find_last_of('/') + 1)
               : "upload";
  }
  if (dest && *dest == "dir") {
    p.dir = box_dest;
    p.top = base;
    return p;
  }
  auto slash = box_dest.find_last_of('/');
  p.dir = slash == 0 ? "/" : box_dest.substr(0, slash);
  p.top = box_dest.substr(slash + 1);
  if (p.top.empty()) throw_invalid("destination " + box_dest + " has no name");
  auto parent = box_type(p.dir);
  if (!parent) throw Error(Errc::not_found, "destination directory " + p.dir + " does not exist");
  if (*parent != "dir") throw_invalid("destination directory " + p.dir + " is not a directory");
  return p;
}

void write_host_entry(int root, const std::string& rel, const HostEntry& e, const DataPump& data) {
  auto drain = [&] {
    if (e.type == "file") data([](const char*, size_t) {});
  };
  auto slash = rel.rfind('/');
  std::string leaf = slash == std::string::npos ? rel : rel.substr(slash + 1);
  UniqueFd parent(slash == std::string::npos
                      ? ::fcntl(root, F_DUPFD_CLOEXEC, 3)
                      : open_beneath(root, rel.substr(0, slash), O_RDONLY | O_DIRECTORY));
  if (!parent) {
    int err = errno;
    drain();
    throw_sys("copy " + rel, err);
  }
  // Set-id bits from a box never reach the host.
  mode_t mode = static_cast<mode_t>(e.mode) & 01777;
  if (e.type == "dir") {
    if (::mkdirat(parent.get(), leaf.c_str(), mode | 0700) != 0 && errno != EEXIST)
      throw_sys("mkdir " + rel);
  } else if (e.type == "symlink") {
    ::unlinkat(parent.get(), leaf.c_str(), 0);
    if (::symlinkat(e.target.c_str(), parent.get(), leaf.c_str()) != 0) throw_sys("symlink " + rel);
  } else if (e.type == "file") {
    struct stat st;
    if (::fstatat(parent.get(), leaf.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
        !S_ISREG(st.st_mode))
      ::unlinkat(parent.get(), leaf.c_str(), S_ISDIR(st.st_mode) ? AT_REMOVEDIR : 0);
    UniqueFd out(::openat(parent.get(), leaf.c_str(),
                          O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, mode));
    if (!out) {
      int err = errno;
      drain();
      throw_sys("create " + rel, err);
    }
    data([&](const char* p, size_t n) { write_all(out.get(), p, n); });
    ::fchmod(out.get(), mode);
  }
}

namespace {

struct ArchiveWriter {
  archive* a = archive_write_new();
  ~ArchiveWriter() { archive_write_free(a); }
};
struct ArchiveReader {
  archive* a = archive_read_new();
  ~ArchiveReader() { archive_read_free(a); }
};

void check(archive* a, int r, const char* what) {
  if (r < ARCHIVE_WARN)
    throw Error(Errc::internal, std::string(what) + ": " + archive_error_string(a));
}

void add_host_tree(archive* a, const std::string& path, const std::string& rel) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) throw_sys("stat " + path);
  std::unique_ptr<archive_entry, decltype(&archive_entry_free)> ent(archive_entry_new(),
                                                                    archive_entry_free);
  archive_entry_set_pathname(ent.get(), rel.c_str());
  archive_entry_set_perm(ent.get(), st.st_mode & 07777);
  archive_entry_set_mtime(ent.get(), st.st_mtim.tv_sec, 0);
  if (S_ISDIR(st.st_mode)) {
    archive_entry_set_filetype(ent.get(), AE_IFDIR);
    check(a, archive_write_header(a, ent.get()), "tar");
    DIR* d = ::opendir(path.c_str());
    if (!d) throw_sys("open " + path);
    std::vector<std::string> names;
    while (dirent* de = ::readdir(d))
      if (std::strcmp(de->d_name, ".") && std::strcmp(de->d_name, ".."))
        names.emplace_back(de->d_name);
    ::closedir(d);
    for (const auto& n : names) add_host_tree(a, path + "/" + n, rel + "/" + n);
  } else if (S_ISLNK(st.st_mode)) {
    char buf[4096];
    ssize_t n = ::readlink(path.c_str(), buf, sizeof buf);
    archive_entry_set_filetype(ent.get(), AE_IFLNK);
    archive_entry_set_symlink(ent.get(),
                              std::string(buf, n > 0 ? static_cast<size_t>(n) : 0).c_str());
    check(a, archive_write_header(a, ent.get()), "tar");
  } else if (S_ISREG(st.st_mode)) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd) throw_sys("open " + path);
    struct stat fst;
    if (::fstat(fd.get(), &fst) != 0) throw_sys("stat " + path);
    archive_entry_set_filetype(ent.get(), AE_IFREG);
    archive_entry_set_size(ent.get(), fst.st_size);
    check(a, archive_write_header(a, ent.get()), "tar");
    char buf[65536];
    off_t left = fst.st_size;
    while (left > 0) {
      ssize_t n = ::read(fd.get(), buf, std::min<size_t>(sizeof buf, static_cast<size_t>(left)));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) throw Error(Errc::failed_precondition, path + " changed while it was copied");
      if (archive_write_data(a, buf, static_cast<size_t>(n)) < 0) check(a, ARCHIVE_FATAL, "tar");
      left -= n;
    }
  }
}

}  // namespace

void host_tree_to_tar(const std::string& host_path, const std::string& top, int out_fd) {
  ArchiveWriter w;
  archive_write_set_format_pax_restricted(w.a);
  archive_write_set_bytes_in_last_block(w.a, 1);
  check(w.a, archive_write_open_fd(w.a, out_fd), "tar");
  add_host_tree(w.a, host_path, top);
  check(w.a, archive_write_close(w.a), "tar");
}

void tar_to_host(int in_fd, const CopyOutPlan& plan) {
  UniqueFd root(::open(plan.root_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!root) throw_sys("open " + plan.root_dir);
  ArchiveReader r;
  archive_read_support_format_tar(r.a);
  check(r.a, archive_read_open_fd(r.a, in_fd, 65536), "read tar");
  archive_entry* ent;
  for (;;) {
    int st = archive_read_next_header(r.a, &ent);
    if (st == ARCHIVE_EOF) break;
    check(r.a, st, "read tar");
    std::string rel = archive_entry_pathname(ent) ? archive_entry_pathname(ent) : "";
    while (rel.ends_with("/")) rel.pop_back();
    if (!plain_relative(rel))
      throw Error(Errc::invalid_argument, "the box sent an unsafe path '" + rel + "'");
    HostEntry e;
    switch (archive_entry_filetype(ent)) {
      case AE_IFDIR:
        e.type = "dir";
        break;
      case AE_IFLNK:
        e.type = "symlink";
        e.target = archive_entry_symlink(ent) ? archive_entry_symlink(ent) : "";
        break;
      case AE_IFREG:
        e.type = "file";
        break;
      default:
        continue;
    }
    e.mode = archive_entry_perm(ent);
    auto dest = plan.map(rel);
    if (!dest) continue;
    write_host_entry(root.get(), *dest, e,
                     [&](const std::function<void(const char*, size_t)>& sink) {
                       char buf[65536];
                       for (;;) {
                         la_ssize_t n = archive_read_data(r.a, buf, sizeof buf);
                         if (n < 0) check(r.a, static_cast<int>(n), "read tar");
                         if (n <= 0) return;
                         sink(buf, static_cast<size_t>(n));
                       }
                     });
  }
}

}  // namespace upstream
