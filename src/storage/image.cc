#include "storage/image.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include "common/digest.h"
#include "common/error.h"
#include "common/fd.h"
#include "common/init_protocol.h"
#include "common/strings.h"

namespace upstream::storage {

namespace {

void mkdir_owned(const std::string& path, mode_t mode, uid_t uid = 0, gid_t gid = 0) {
  if (::mkdir(path.c_str(), mode) != 0 && errno != EEXIST) throw_sys("mkdir " + path);
  ::chmod(path.c_str(), mode);
  ::lchown(path.c_str(), uid, gid);
}

// Upper directory of an overlay: same mode and owner as the directory it covers.
void make_upper(const std::string& fs, const std::string& name, const std::string& covers) {
  struct stat st {};
  mode_t mode = 0755;
  uid_t uid = 0;
  gid_t gid = 0;
  if (!covers.empty() && ::stat(covers.c_str(), &st) == 0) {
    mode = st.st_mode & 07777;
    uid = st.st_uid;
    gid = st.st_gid;
  }
  mkdir_owned(fs + "/" + name, 0700);
  struct stat u;
  if (::stat((fs + "/" + name + "/upper").c_str(), &u) != 0)
    mkdir_owned(fs + "/" + name + "/upper", mode, uid, gid);
  mkdir_owned(fs + "/" + name + "/work", 0700);
}

// The box's own /etc/hostname, /etc/hosts and /etc/machine-id. They are derived data, rewritten
// at every start when they differ, so they need no fsync - only the atomic rename, so that a
// crash never leaves a half-written file.
void write_box_file(const std::string& path, const std::string& text) {
  if (try_read_file(path, 1 << 16) == text) return;
  write_file_atomic_with(
      path, 0644,
      [&](int fd) {
        write_all(fd, text);
        (void)!::fchown(fd, 0, 0);
      },
      false);
}

void write_identity_files(const std::string& volume, const ImagePlan& plan,
                          const std::string& hostname) {
  std::string etc = volume + "/fs/" + plan.etc_upper;
  struct stat st;
  if (::stat(etc.c_str(), &st) != 0) mkdir_owned(etc, 0755);
  write_box_file(etc + "/hostname", hostname + "\n");
  write_box_file(etc + "/hosts", initproto::hosts_file(hostname));
  if (::stat((etc + "/machine-id").c_str(), &st) != 0)
    write_box_file(etc + "/machine-id", random_hex(32) + "\n");
}

}  // namespace

ImageRef parse_image(const std::string& spec) {
  if (spec.empty() || spec == "host") return ImageRef{"host", ""};
  auto colon = spec.find(':');
  // A bare name: a snapshot or an image built with `upstream image build` (the engine looks it
  // up).
  if (colon == std::string::npos && valid_box_name(spec)) return ImageRef{"snapshot", spec};
  std::string kind = colon == std::string::npos ? "" : spec.substr(0, colon);
  std::string path = colon == std::string::npos ? "" : spec.substr(colon + 1);
  if (kind != "dir" && kind != "tar")
    throw_invalid("unknown image '" + spec +
                  "': use host, dir:/path/to/rootfs, tar:/path/to/rootfs.tar, or the name of a "
                  "snapshot or image");
  if (path.empty() || path[0] != '/')
    throw_invalid("image path in '" + spec + "' must be absolute");
  if (path.find('\n') != std::string::npos || path.find(',') != std::string::npos)
    throw_invalid("image path in '" + spec + "' contains a character that is not allowed");
  struct stat st;
  if (::stat(path.c_str(), &st) != 0)
    throw Error(Errc::not_found, "image path " + path + ": " + errno_string(errno), errno);
  if (kind == "dir") {
    if (!S_ISDIR(st.st_mode)) throw_invalid("image path " + path + " is not a directory");
    struct stat b;
    if (::stat((path + "/bin").c_str(), &b) != 0 && ::stat((path + "/usr").c_str(), &b) != 0)
      throw_invalid("image directory " + path +
                    " does not look like a root filesystem (no /bin or /usr)");
  } else if (!S_ISREG(st.st_mode)) {
    throw_invalid("image path " + path + " is not a regular file");
  }
  return ImageRef{kind, path};
}

ImagePlan plan_image(const ImageRef& ref, const Layout& layout, const HostImage* host) {
  ImagePlan plan;
  plan.ref = ref;
  if (ref.kind == "host") {
    if (!host) throw Error("host image not prepared");
    plan.host_generation = host->generation;
    plan.overlays.push_back({"", {host->skel()}, "root/upper", "root/work"});
    for (const auto& d : host->system_dirs)
      plan.overlays.push_back({d, {host->mask(d), "/" + d}, d + "/upper", d + "/work"});
    plan.etc_upper = "etc/upper";
    return plan;
  }
  plan.rootfs_dir = ref.kind == "dir" ? ref.path : import_tarball(ref.path, layout);
  plan.overlays.push_back({"", {plan.rootfs_dir}, "root/upper", "root/work"});
  plan.etc_upper = "root/upper/etc";
  return plan;
}

void prepare_volume(const std::string& volume, const ImagePlan& plan, const std::string& hostname) {
  std::string fs = volume + "/fs";
  mkdir_owned(fs, 0700);
  mkdir_owned(volume + "/rootfs", 0755);
  mkdir_owned(volume + "/logs", 0700);
  for (const auto& ov : plan.overlays) {
    std::string name = ov.upper.substr(0, ov.upper.find('/'));
    std::string covers =
        ov.target.empty() ? (plan.rootfs_dir.empty() ? "" : plan.rootfs_dir) : ov.lowers.back();
    make_upper(fs, name, covers);
  }
  if (plan.ref.kind != "host") {
    // A root filesystem may lack the directories the box needs; add them to its upper layer.
    std::string img = plan.rootfs_dir, up = fs + "/root/upper";
    struct stat st;
    const std::pair<const char*, mode_t> needed[] = {{"proc", 0755}, {"sys", 0755},  {"dev", 0755},
                                                     {"run", 0755},  {"tmp", 01777}, {"root", 0700},
                                                     {"home", 0755}, {"etc", 0755}};
    for (auto [name, mode] : needed)
      if (::lstat((img + "/" + name).c_str(), &st) != 0) mkdir_owned(up + "/" + name, mode);
    if (::lstat((img + "/home/user").c_str(), &st) != 0) {
      if (::lstat((img + "/home").c_str(), &st) == 0 && !S_ISDIR(st.st_mode))
        throw_invalid("image " + plan.ref.spec() + " has a /home that is not a directory");
      mkdir_owned(up + "/home", 0755);
      mkdir_owned(up + "/home/user", 0755, 1000, 1000);
    }
  }
  write_identity_files(volume, plan, hostname);
}

void refresh_volume(const std::string& volume, const ImagePlan& plan, const std::string& hostname) {
  std::string fs = volume + "/fs";
  for (const auto& ov : plan.overlays) {
    std::string name = ov.upper.substr(0, ov.upper.find('/'));
    struct stat st;
    if (::stat((fs + "/" + name + "/work").c_str(), &st) != 0)
      make_upper(fs, name, ov.target.empty() ? plan.rootfs_dir : ov.lowers.back());
  }
  write_identity_files(volume, plan, hostname);
}

namespace {}  // namespace

std::string import_tarball(const std::string& tar_path, const Layout& layout) {
  std::string key = sha256_file_hex(tar_path);
  std::string dest = layout.tar_images_dir() + "/" + key;
  std::string rootfs = dest + "/rootfs";
  struct stat st;
  if (::stat(rootfs.c_str(), &st) == 0) return rootfs;
  make_dirs(layout.tar_images_dir(), 0700);
  FileLock lock(layout.lock("tar-" + key));
  if (::stat(rootfs.c_str(), &st) == 0) return rootfs;

  std::string tmp = dest + ".tmp";
  remove_tree(tmp);
  make_dirs(tmp + "/rootfs", 0755);
  archive* a = archive_read_new();
  archive_read_support_filter_all(a);
  archive_read_support_format_tar(a);
  archive_read_support_format_gnutar(a);
  archive* w = archive_write_disk_new();
  // Owners and modes are kept (they are image-relative ids, shifted per box at run time).
  // Entry names are checked below (no absolute paths, no ".."), then placed under our directory,
  // and libarchive refuses any entry whose path would pass through a symlink on disk.
  archive_write_disk_set_options(w, ARCHIVE_EXTRACT_OWNER | ARCHIVE_EXTRACT_PERM |
                                        ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_XATTR |
                                        ARCHIVE_EXTRACT_SECURE_NODOTDOT |
                                        ARCHIVE_EXTRACT_SECURE_SYMLINKS);
  auto cleanup = [&]() {
    archive_read_free(a);
    archive_write_free(w);
  };
  std::string error;
  uint64_t entries = 0;
  if (archive_read_open_filename(a, tar_path.c_str(), 1 << 16) != ARCHIVE_OK) {
    error = std::string("cannot read ") + tar_path + ": " + archive_error_string(a);
  } else {
    archive_entry* e;
    for (;;) {
      int r = archive_read_next_header(a, &e);
      if (r == ARCHIVE_EOF) break;
      if (r < ARCHIVE_WARN) {
        error = std::string("bad tarball ") + tar_path + ": " + archive_error_string(a);
        break;
      }
      entries++;
      std::string name = archive_entry_pathname(e) ? archive_entry_pathname(e) : "";
      while (starts_with(name, "./")) name = name.substr(2);
      mode_t type = archive_entry_filetype(e);
      // Device nodes are provided by the box's own /dev; the image's are skipped.
      if (name.empty() || type == AE_IFCHR || type == AE_IFBLK) continue;
      if (name[0] == '/' || name == ".." || starts_with(name, "../") ||
          name.find("/../") != std::string::npos) {
        error = "bad tarball " + tar_path + ": entry '" + name + "' points outside the image";
        break;
      }
      std::string target = tmp + "/rootfs/" + name;
      archive_entry_set_pathname(e, target.c_str());
      if (const char* hl = archive_entry_hardlink(e)) {
        std::string h = hl;
        while (starts_with(h, "./")) h = h.substr(2);
        archive_entry_set_hardlink(e, (tmp + "/rootfs/" + h).c_str());
      }
      r = archive_write_header(w, e);
      if (r < ARCHIVE_WARN) {
        error = std::string("cannot unpack ") + name + ": " + archive_error_string(w);
        break;
      }
      if (archive_entry_size(e) > 0) {
        const void* buf;
        size_t size;
        la_int64_t off;
        while ((r = archive_read_data_block(a, &buf, &size, &off)) == ARCHIVE_OK)
          if (archive_write_data_block(w, buf, size, off) < ARCHIVE_WARN) {
            r = ARCHIVE_FATAL;
            break;
          }
        if (r != ARCHIVE_EOF) {
          error = std::string("bad tarball ") + tar_path + " at " + name + ": " +
                  archive_error_string(a);
          break;
        }
      }
      if (archive_write_finish_entry(w) < ARCHIVE_WARN) {
        error = std::string("cannot unpack ") + name + ": " + archive_error_string(w);
        break;
      }
    }
  }
  cleanup();
  if (error.empty() && entries == 0) error = "tarball " + tar_path + " is empty";
  if (error.empty()) {
    struct stat b;
    if (::stat((tmp + "/rootfs/bin").c_str(), &b) != 0 &&
        ::stat((tmp + "/rootfs/usr").c_str(), &b) != 0)
      error = "tarball " + tar_path + " does not contain a root filesystem (no /bin or /usr)";
  }
  if (!error.empty()) {
    remove_tree(tmp);
    throw_invalid(error);
  }
  if (::rename(tmp.c_str(), dest.c_str()) != 0) throw_sys("rename " + tmp);
  return rootfs;
}

}  // namespace upstream::storage
