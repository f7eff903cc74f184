#include "storage/pool.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/btrfs.h>
#include <linux/btrfs_tree.h>
#include <linux/loop.h>
#include <linux/magic.h>
#include <spawn.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <functional>
#include <vector>

#include "common/error.h"
#include "common/fd.h"
#include "common/proc.h"
#include "common/strings.h"

extern char** environ;

namespace upstream::storage {

namespace {

constexpr uint64_t kMinPool = 1ull << 30;

bool is_btrfs_mount(const std::string& path) {
  struct statfs fs;
  if (::statfs(path.c_str(), &fs) != 0 || fs.f_type != BTRFS_SUPER_MAGIC) return false;
  struct stat a, b;
  if (::stat(path.c_str(), &a) != 0 || ::stat((path + "/..").c_str(), &b) != 0) return false;
  return a.st_dev != b.st_dev;
}

bool kernel_has_btrfs() {
  for (const auto& line : split(try_read_file("/proc/filesystems").value_or(""), '\n'))
    if (trim(line) == "btrfs" || line.find("\tbtrfs") != std::string::npos) return true;
  return false;
}

UniqueFd attach_loop(const std::string& image) {
  UniqueFd img = open_or_throw(image, O_RDWR);
  UniqueFd ctl(::open("/dev/loop-control", O_RDWR | O_CLOEXEC));
  if (!ctl) throw_sys(Errc::unavailable, "open /dev/loop-control");
  for (int attempt = 0; attempt < 64; attempt++) {
    int n = ::ioctl(ctl.get(), LOOP_CTL_GET_FREE);
    if (n < 0) throw_sys(Errc::unavailable, "find a free loop device");
    std::string dev = "/dev/loop" + std::to_string(n);
    struct stat st;
    if (::stat(dev.c_str(), &st) != 0 && ::mknod(dev.c_str(), S_IFBLK | 0660, makedev(7, n)) != 0)
      throw_sys(Errc::unavailable, "create " + dev);
    UniqueFd loop(::open(dev.c_str(), O_RDWR | O_CLOEXEC));
    if (!loop) throw_sys(Errc::unavailable, "open " + dev);
    loop_config cfg{};
    cfg.fd = static_cast<uint32_t>(img.get());
    cfg.info.lo_flags = LO_FLAGS_AUTOCLEAR;
    std::strncpy(reinterpret_cast<char*>(cfg.info.lo_file_name), image.c_str(), LO_NAME_SIZE - 1);
    if (::ioctl(loop.get(), LOOP_CONFIGURE, &cfg) == 0) return loop;
    if (errno != EBUSY) throw_sys(Errc::unavailable, "attach " + image + " to " + dev);
  }
  throw Error(Errc::unavailable, "no loop device could be attached to " + image);
}

void mount_pool(const std::string& image, const std::string& mnt) {
  UniqueFd loop = attach_loop(image);
  std::string dev = "/proc/self/fd/" + std::to_string(loop.get());
  char target[64];
  ssize_t n = ::readlink(dev.c_str(), target, sizeof target - 1);
  if (n <= 0) throw_sys("readlink loop device");
  target[n] = 0;
  if (::mount(target, mnt.c_str(), "btrfs", MS_NOSUID | MS_NODEV | MS_NOATIME,
              "discard=async,user_subvol_rm_allowed,commit=5") != 0)
    throw_sys(Errc::unavailable, "mount the storage pool " + image);
  // The mount keeps the loop device; with autoclear it is released when the pool is unmounted.
}

uint64_t subvol_id(const std::string& path) {
  UniqueFd fd = open_or_throw(path, O_RDONLY | O_DIRECTORY);
  btrfs_ioctl_ino_lookup_args a{};
  a.objectid = BTRFS_FIRST_FREE_OBJECTID;
  if (::ioctl(fd.get(), BTRFS_IOC_INO_LOOKUP, &a) != 0) throw_sys("look up subvolume " + path);
  return a.treeid;
}

}  // namespace

Pool Pool::open(const Layout& layout, const PoolOptions& opts) {
  if (opts.kind != "auto" && opts.kind != "btrfs" && opts.kind != "dir")
    throw_invalid("unknown storage kind '" + opts.kind + "' (use auto, btrfs or dir)");
  if (opts.kind == "dir") {
    make_dirs(layout.plain_volumes(), 0700);
    Pool p(PoolKind::plain, layout.plain_volumes());
    p.why_plain_ = "configured";
    return p;
  }
  const std::string mnt = layout.pool_mount();
  if (is_btrfs_mount(mnt)) return Pool(PoolKind::btrfs, mnt + "/boxes");

  make_dirs(layout.locks_dir(), 0700);
  FileLock lock(layout.lock("pool"));
  if (is_btrfs_mount(mnt)) return Pool(PoolKind::btrfs, mnt + "/boxes");
  make_dirs(mnt, 0700);
  struct stat st;
  if (::stat(layout.pool_image().c_str(), &st) == 0) {
    // The pool exists: boxes' data is in it, so failing to mount it is an error, never a fallback.
    mount_pool(layout.pool_image(), mnt);
    make_dirs(mnt + "/boxes", 0700);
    return Pool(PoolKind::btrfs, mnt + "/boxes");
  }

  std::string why;
  if (!kernel_has_btrfs()) why = "the kernel has no btrfs support";
  if (why.empty()) {
    struct statvfs vfs;
    if (::statvfs(layout.home.c_str(), &vfs) != 0) throw_sys("statvfs " + layout.home);
    uint64_t free_bytes = static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize;
    uint64_t size = opts.size_bytes.value_or(free_bytes / 10 * 8);
    if (size < kMinPool) {
      why = "only " + format_bytes(free_bytes) + " free for the storage pool";
    } else {
      std::string tmp = layout.pool_image() + ".new";
      try {
        UniqueFd img(::open(tmp.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
        if (!img) throw_sys("create " + tmp);
        if (::ftruncate(img.get(), static_cast<off_t>(size)) != 0) throw_sys("size " + tmp);
        img.reset();
        run_tool({"mkfs.btrfs", "-q", "-f", "-m", "single", "-d", "single", tmp});
        if (::rename(tmp.c_str(), layout.pool_image().c_str()) != 0) throw_sys("rename " + tmp);
        mount_pool(layout.pool_image(), mnt);
        UniqueFd root = open_or_throw(mnt, O_RDONLY | O_DIRECTORY);
        btrfs_ioctl_quota_ctl_args q{};
        q.cmd = BTRFS_QUOTA_CTL_ENABLE;
        if (::ioctl(root.get(), BTRFS_IOC_QUOTA_CTL, &q) != 0) throw_sys("enable btrfs quotas");
        make_dirs(mnt + "/boxes", 0700);
        return Pool(PoolKind::btrfs, mnt + "/boxes");
      } catch (const Error& e) {
        ::unlink(tmp.c_str());
        if (opts.kind == "btrfs") throw;
        why = e.what();
        if (is_btrfs_mount(mnt)) ::umount2(mnt.c_str(), MNT_DETACH);
        ::unlink(layout.pool_image().c_str());
      }
    }
  }
  if (opts.kind == "btrfs")
    throw Error(Errc::unavailable, "btrfs storage pool unavailable: " + why);
  make_dirs(layout.plain_volumes(), 0700);
  Pool p(PoolKind::plain, layout.plain_volumes());
  p.why_plain_ = why;
  return p;
}

std::string Pool::describe() const {
  if (kind_ == PoolKind::btrfs)
    return "btrfs pool at " + root_ + " (" + format_bytes(free_bytes()) + " free of " +
           format_bytes(total_bytes()) + "), per-box disk limits enforced";
  return "plain directories at " + root_ + " (no disk limits: " + why_plain_ + ")";
}

std::string Pool::data_root() const { return root_.substr(0, root_.rfind('/')); }

std::string Pool::volume_path(const std::string& id) const { return root_ + "/" + id; }

bool Pool::volume_exists(const std::string& id) const {
  struct stat st;
  return ::stat(volume_path(id).c_str(), &st) == 0;
}

namespace {

void make_subvolume(const std::string& parent, const std::string& name) {
  UniqueFd dir = open_or_throw(parent, O_RDONLY | O_DIRECTORY);
  btrfs_ioctl_vol_args_v2 a{};
  if (name.size() >= sizeof a.name) throw Error("volume name too long");
  std::strncpy(a.name, name.c_str(), sizeof a.name - 1);
  if (::ioctl(dir.get(), BTRFS_IOC_SUBVOL_CREATE_V2, &a) != 0)
    throw_sys("create volume " + parent + "/" + name);
  ::chmod((parent + "/" + name).c_str(), 0700);
}

void limit_subvolume(const std::string& root, const std::string& path,
                     std::optional<uint64_t> limit) {
  UniqueFd dir = open_or_throw(root, O_RDONLY | O_DIRECTORY);
  btrfs_ioctl_qgroup_limit_args q{};
  q.qgroupid = subvol_id(path);
  q.lim.flags = BTRFS_QGROUP_LIMIT_MAX_RFER;
  q.lim.max_rfer = limit ? *limit : static_cast<uint64_t>(-1);
  if (::ioctl(dir.get(), BTRFS_IOC_QGROUP_LIMIT, &q) != 0) throw_sys("set disk limit of " + path);
}

// Deletes a subvolume by name in its parent; false if it is not a subvolume.
// False when `name` is no subvolume (a directory left by an interrupted create). A delete the
// quota refuses (it writes to the parent, which may be a full box) runs `lift` and is tried
// once more.
bool delete_subvolume(const std::string& parent, const std::string& name,
                      const std::function<void()>& lift = {}) {
  UniqueFd dir = open_or_throw(parent, O_RDONLY | O_DIRECTORY);
  btrfs_ioctl_vol_args_v2 a{};
  std::strncpy(a.name, name.c_str(), sizeof a.name - 1);
  if (::ioctl(dir.get(), BTRFS_IOC_SNAP_DESTROY_V2, &a) == 0) return true;
  if (errno == EDQUOT && lift) {
    lift();
    if (::ioctl(dir.get(), BTRFS_IOC_SNAP_DESTROY_V2, &a) == 0) return true;
  }
  if (errno == ENOTDIR || errno == EINVAL || errno == EPERM) return false;
  throw_sys("remove volume " + parent + "/" + name);
}

}  // namespace

void Pool::create_volume(const std::string& id, std::optional<uint64_t> limit,
                         std::optional<uint64_t> log_limit) {
  if (kind_ == PoolKind::plain) {
    if (limit)
      throw Error(Errc::unavailable,
                  "disk limits need the btrfs storage pool (" + why_plain_ + ")");
    if (::mkdir(volume_path(id).c_str(), 0700) != 0) throw_sys("create volume " + id);
    if (::mkdir((volume_path(id) + "/logs").c_str(), 0700) != 0)
      throw_sys("create volume " + id + "/logs");
    return;
  }
  make_subvolume(root_, id);
  try {
    limit_subvolume(root_, volume_path(id), limit);
    make_subvolume(volume_path(id), "logs");
    limit_subvolume(root_, volume_path(id) + "/logs", log_limit);
  } catch (...) {
    destroy_volume(id);
    throw;
  }
}

void Pool::set_volume_limit(const std::string& id, std::optional<uint64_t> limit) {
  if (kind_ == PoolKind::plain) {
    if (limit)
      throw Error(Errc::unavailable,
                  "disk limits need the btrfs storage pool (" + why_plain_ + ")");
    return;
  }
  limit_subvolume(root_, volume_path(id), limit);
}

void Pool::destroy_volume(const std::string& id) {
  if (!volume_exists(id)) return;
  if (kind_ == PoolKind::plain) {
    remove_tree(volume_path(id));
    return;
  }
  // A subvolume cannot be deleted while it holds another; the logs go first. A box that filled
  // its disk loses its limits first: the delete writes to it, and nothing is kept of it anyway.
  auto lift = [&] {
    for (const std::string& v : {volume_path(id), volume_path(id) + "/logs"}) {
      try {
        limit_subvolume(root_, v, std::nullopt);
      } catch (const Error&) {
        // not a subvolume (any more): nothing limits it
      }
    }
  };
  struct stat st;
  if (::lstat((volume_path(id) + "/logs").c_str(), &st) == 0 &&
      !delete_subvolume(volume_path(id), "logs", lift))
    remove_tree(volume_path(id) + "/logs");
  // A plain directory here was left by an interrupted create.
  if (!delete_subvolume(root_, id, lift)) remove_tree(volume_path(id));
}

void Pool::copy_volume(const std::string& id, const std::string& dest) const {
  std::string parent = dest.substr(0, dest.rfind('/'));
  std::string name = dest.substr(dest.rfind('/') + 1);
  if (kind_ == PoolKind::plain) {
    if (::mkdir(dest.c_str(), 0700) != 0) throw_sys("create " + dest);
    run_tool({"cp", "-a", "--reflink=auto", volume_path(id) + "/fs", dest + "/fs"});
    return;
  }
  UniqueFd src = open_or_throw(volume_path(id), O_RDONLY | O_DIRECTORY);
  UniqueFd dir = open_or_throw(parent, O_RDONLY | O_DIRECTORY);
  btrfs_ioctl_vol_args_v2 a{};
  if (name.size() >= sizeof a.name) throw Error("snapshot name too long");
  a.fd = src.get();
  std::strncpy(a.name, name.c_str(), sizeof a.name - 1);
  // The kernel flushes the source's dirty data first, so the copy holds everything written.
  if (::ioctl(dir.get(), BTRFS_IOC_SNAP_CREATE_V2, &a) != 0)
    throw_sys("snapshot volume " + id + " to " + dest);
}

void Pool::copy_tree(const std::string& src, const std::string& dest) const {
  run_tool({"cp", "-a", "--reflink=auto", "--no-target-directory", src, dest});
}

void Pool::make_tree(const std::string& dest) const {
  if (kind_ == PoolKind::plain) {
    if (::mkdir(dest.c_str(), 0700) != 0) throw_sys("create " + dest);
    return;
  }
  make_subvolume(dest.substr(0, dest.rfind('/')), dest.substr(dest.rfind('/') + 1));
}

void Pool::remove_tree_at(const std::string& path) const {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return;
  if (kind_ == PoolKind::btrfs &&
      delete_subvolume(path.substr(0, path.rfind('/')), path.substr(path.rfind('/') + 1)))
    return;
  remove_tree(path);
}

void Pool::seal_tree(const std::string& path) const {
  if (kind_ != PoolKind::btrfs) return;
  UniqueFd fd = open_or_throw(path, O_RDONLY | O_DIRECTORY);
  uint64_t flags = 0;
  if (::ioctl(fd.get(), BTRFS_IOC_SUBVOL_GETFLAGS, &flags) != 0) throw_sys("flags of " + path);
  flags |= BTRFS_SUBVOL_RDONLY;
  if (::ioctl(fd.get(), BTRFS_IOC_SUBVOL_SETFLAGS, &flags) != 0)
    throw_sys("make " + path + " read-only");
}

std::optional<uint64_t> Pool::volume_usage(const std::string& id) const {
  if (kind_ != PoolKind::btrfs) return std::nullopt;
  uint64_t qid;
  try {
    qid = subvol_id(volume_path(id));
  } catch (const Error&) {
    return std::nullopt;
  }
  UniqueFd fd(::open(root_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) return std::nullopt;
  btrfs_ioctl_search_args args{};
  args.key.tree_id = BTRFS_QUOTA_TREE_OBJECTID;
  args.key.min_type = args.key.max_type = BTRFS_QGROUP_INFO_KEY;
  args.key.min_offset = args.key.max_offset = qid;
  args.key.max_transid = static_cast<uint64_t>(-1);
  args.key.nr_items = 1;
  if (::ioctl(fd.get(), BTRFS_IOC_TREE_SEARCH, &args) != 0 || args.key.nr_items == 0)
    return std::nullopt;
  auto* hdr = reinterpret_cast<btrfs_ioctl_search_header*>(args.buf);
  if (hdr->len < 3 * sizeof(uint64_t)) return std::nullopt;
  uint64_t fields[3];
  std::memcpy(fields, args.buf + sizeof *hdr, sizeof fields);
  return fields[1];  // generation, referenced, referenced compressed, ...
}

std::vector<std::string> Pool::list_volumes() const {
  std::vector<std::string> out;
  DIR* d = ::opendir(root_.c_str());
  if (!d) return out;
  while (dirent* e = ::readdir(d))
    if (e->d_name[0] != '.') out.emplace_back(e->d_name);
  ::closedir(d);
  return out;
}

uint64_t Pool::total_bytes() const {
  struct statvfs v;
  if (::statvfs(root_.c_str(), &v) != 0) return 0;
  return static_cast<uint64_t>(v.f_blocks) * v.f_frsize;
}

uint64_t Pool::free_bytes() const {
  struct statvfs v;
  if (::statvfs(root_.c_str(), &v) != 0) return 0;
  return static_cast<uint64_t>(v.f_bavail) * v.f_frsize;
}

}  // namespace upstream::storage
