#include "init/setup.h"

#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/mount.h>
#include <linux/seccomp.h>
#include <net/if.h>
#include <sched.h>
#include <sys/fsuid.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <set>

#include "common/error.h"
#include "common/strings.h"

namespace upstream::init {

namespace {

void do_mount(const std::string& src, const std::string& dst, const char* type, unsigned long flags,
              const std::string& data) {
  if (::mount(src.empty() ? nullptr : src.c_str(), dst.c_str(), type, flags,
              data.empty() ? nullptr : data.c_str()) != 0)
    throw_sys("mount " + std::string(type ? type : "bind") + " on " + dst);
}

// A detached copy of `path` whose owners are shifted into the box's uid range.
UniqueFd idmapped_clone(const std::string& path, int userns_fd, bool readonly) {
  int fd = static_cast<int>(
      ::syscall(SYS_open_tree, AT_FDCWD, path.c_str(), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC));
  if (fd < 0) throw_sys("open_tree " + path);
  UniqueFd tree(fd);
  mount_attr attr{};
  attr.attr_set = MOUNT_ATTR_IDMAP | MOUNT_ATTR_NODEV | (readonly ? MOUNT_ATTR_RDONLY : 0);
  attr.userns_fd = static_cast<uint64_t>(userns_fd);
  if (::syscall(SYS_mount_setattr, tree.get(), "", AT_EMPTY_PATH, &attr, sizeof attr) != 0) {
    int err = errno;
    throw Error(Errc::unavailable,
                "cannot map ownership of " + path + " into the box (" + errno_string(err) +
                    "); its filesystem must support idmapped mounts",
                err);
  }
  return tree;
}

void set_effective_caps_to_permitted() {
  __user_cap_header_struct h{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct d[2];
  if (::syscall(SYS_capget, &h, d) != 0) throw_sys("capget");
  d[0].effective = d[0].permitted;
  d[1].effective = d[1].permitted;
  if (::syscall(SYS_capset, &h, d) != 0) throw_sys("capset");
}

void mknod_dev(const std::string& dev, const char* name, unsigned maj, unsigned min, uid_t owner) {
  std::string path = dev + "/" + name;
  if (::mknod(path.c_str(), S_IFCHR | 0666, makedev(maj, min)) != 0) throw_sys("mknod " + path);
  if (::chmod(path.c_str(), 0666) != 0 || ::chown(path.c_str(), owner, owner) != 0)
    throw_sys("chown " + path);
}

bool exists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

void bind_readonly(const std::string& path) {
  if (!exists(path)) return;
  do_mount(path, path, nullptr, MS_BIND | MS_REC, "");
  do_mount("", path, nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
           "");
}

void mask_path(const std::string& path, const std::string& devnull) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return;
  if (S_ISDIR(st.st_mode))
    do_mount("tmpfs", path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
             "size=0,mode=0555");
  else
    do_mount(devnull, path, nullptr, MS_BIND, "");
}

void build_dev(const std::string& root, const initproto::Config& cfg) {
  const uid_t owner = cfg.uid_base;
  std::string dev = root + "/dev";
  do_mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC | MS_STRICTATIME,
           "mode=755,size=65536k,nr_inodes=4096,uid=" + std::to_string(owner) +
               ",gid=" + std::to_string(owner));
  mknod_dev(dev, "null", 1, 3, owner);
  mknod_dev(dev, "zero", 1, 5, owner);
  mknod_dev(dev, "full", 1, 7, owner);
  mknod_dev(dev, "random", 1, 8, owner);
  mknod_dev(dev, "urandom", 1, 9, owner);
  mknod_dev(dev, "tty", 5, 0, owner);
  const std::pair<const char*, const char*> links[] = {
      {"fd", "/proc/self/fd"},       {"stdin", "/proc/self/fd/0"}, {"stdout", "/proc/self/fd/1"},
      {"stderr", "/proc/self/fd/2"}, {"ptmx", "pts/ptmx"},         {"core", "/proc/kcore"}};
  for (auto& [name, target] : links) {
    if (std::string(name) == "core") continue;
    std::string p = dev + "/" + name;
    if (::symlink(target, p.c_str()) != 0) throw_sys("symlink " + p);
    ::lchown(p.c_str(), owner, owner);
  }
  for (const char* d : {"pts", "shm", "mqueue"}) {
    std::string p = dev + "/" + d;
    if (::mkdir(p.c_str(), 0755) != 0) throw_sys("mkdir " + p);
    ::chown(p.c_str(), owner, owner);
  }
  do_mount("devpts", dev + "/pts", "devpts", MS_NOSUID | MS_NOEXEC,
           "newinstance,ptmxmode=0666,mode=0620,gid=" + std::to_string(owner + 5));
  do_mount("tmpfs", dev + "/shm", "tmpfs", MS_NOSUID | MS_NODEV,
           "mode=1777,size=" + std::to_string(cfg.shm_bytes) + ",uid=" + std::to_string(owner) +
               ",gid=" + std::to_string(owner));
  do_mount("mqueue", dev + "/mqueue", "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC, "");
}

// The box's own meminfo, cpuinfo, ... (served by LXCFS on the host) over the kernel's, read-only.
// A file that cannot be bound stays the kernel's: the box works as it would without the view.
void bind_proc_view(const std::string& root, const initproto::Config& cfg) {
  if (cfg.proc_view.empty()) return;
  for (const auto& f : cfg.proc_view_files) {
    std::string from = cfg.proc_view + "/" + f, to = root + "/" + f;
    // (The source is not looked at first: each look is a round trip to the FUSE daemon.)
    if (f.find("..") != std::string::npos || !exists(to)) continue;
    if (::mount(from.c_str(), to.c_str(), nullptr, MS_BIND, nullptr) != 0) continue;
    ::mount("", to.c_str(), nullptr,
            MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr);
  }
}

void build_proc_and_sys(const std::string& root) {
  std::string proc = root + "/proc";
  do_mount("proc", proc, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "");
  const std::string devnull = root + "/dev/null";
  // Host-wide information and controls that a box has no business with (as Docker masks them).
  for (const char* p :
       {"kcore", "keys", "timer_list", "sched_debug", "latency_stats", "acpi", "scsi",
        "sysrq-trigger", "kallsyms", "kpagecgroup", "kpagecount", "kpageflags"})
    mask_path(proc + "/" + p, devnull);
  for (const char* p : {"sys", "irq", "bus", "fs"}) bind_readonly(proc + "/" + p);

  std::string sys = root + "/sys";
  if (exists(sys)) {
    if (::mount("sysfs", sys.c_str(), "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
                nullptr) == 0) {
      for (const char* p :
           {"firmware", "kernel/security", "kernel/debug", "devices/virtual/powercap"})
        mask_path(sys + "/" + p, devnull);
    }
    // When sysfs cannot be mounted the box simply has no /sys.
  }
}

void bring_up_loopback() {
  int s = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) throw_sys("socket");
  UniqueFd sock(s);
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
  if (::ioctl(s, SIOCGIFFLAGS, &ifr) != 0) throw_sys("SIOCGIFFLAGS lo");
  ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP | IFF_RUNNING);
  if (::ioctl(s, SIOCSIFFLAGS, &ifr) != 0) throw_sys("SIOCSIFFLAGS lo");
}

}  // namespace

BoxHandles prepare_host_handles(const initproto::Config& cfg) {
  // Nothing we mount may leak back to the host, and nothing the host mounts later matters here.
  do_mount("", "/", nullptr, MS_REC | MS_PRIVATE, "");

  BoxHandles h;
  int exe = ::open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
  if (exe < 0) throw_sys("open /proc/self/exe");
  h.self_exe.reset(exe);

  int s = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (s < 0) throw_sys("socket");
  h.listen_sock.reset(s);
  auto slash = cfg.socket_path.rfind('/');
  std::string dir = cfg.socket_path.substr(0, slash), name = cfg.socket_path.substr(slash + 1);
  if (::chdir(dir.c_str()) != 0) throw_sys("chdir " + dir);
  ::unlink(name.c_str());
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (name.size() >= sizeof addr.sun_path) throw Error("socket name too long: " + name);
  std::memcpy(addr.sun_path, name.c_str(), name.size() + 1);
  mode_t old = ::umask(077);
  int rc = ::bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  ::umask(old);
  if (rc != 0) throw_sys("bind " + cfg.socket_path);
  if (::listen(s, 128) != 0) throw_sys("listen");
  if (::chdir("/") != 0) throw_sys("chdir /");

  if (!cfg.cgroup_dir.empty()) {
    int cg = ::open(cfg.cgroup_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (cg < 0) throw_sys("open " + cfg.cgroup_dir);
    h.cgroup_dir.reset(cg);
  }
  return h;
}

void build_root(const initproto::Config& cfg, int userns_fd, const PhaseMark& mark) {
  const std::string& root = cfg.rootfs;

  // Every lower layer and the volume are cloned with their owners shifted into the box's range;
  // overlay then stores new files with box-relative owners (uid 0 on disk is box root).
  std::map<std::string, UniqueFd> lowers;
  for (const auto& ov : cfg.overlays)
    for (const auto& l : ov.lowers)
      if (!lowers.count(l)) lowers.emplace(l, idmapped_clone(l, userns_fd, true));
  UniqueFd volume = idmapped_clone(cfg.volume_fs, userns_fd, false);
  mark("idmap");
  const std::string vol = "/proc/self/fd/" + std::to_string(volume.get());

  // The mounter's credentials are the ones overlay uses on the layers; with fsuid set to box root
  // they map through the shifted volume, and the effective set keeps the capabilities copy-up
  // needs.
  if (::setfsgid(cfg.uid_base) < 0 || ::setfsuid(cfg.uid_base) < 0) throw_sys("setfsuid");
  set_effective_caps_to_permitted();
  for (const auto& ov : cfg.overlays) {
    std::string opts = "lowerdir=";
    for (size_t i = 0; i < ov.lowers.size(); i++) {
      if (i) opts += ":";
      opts += "/proc/self/fd/" + std::to_string(lowers.at(ov.lowers[i]).get());
    }
    opts += ",upperdir=" + vol + "/" + ov.upper + ",workdir=" + vol + "/" + ov.work +
            ",redirect_dir=on,xino=off,index=off,metacopy=off";
    std::string target = ov.target.empty() ? root : root + "/" + ov.target;
    if (::mount("overlay", target.c_str(), "overlay", MS_NODEV, opts.c_str()) != 0) {
      int err = errno;
      ::setfsuid(0);
      ::setfsgid(0);
      throw_sys("mount overlay on /" + ov.target, err);
    }
  }
  ::setfsuid(0);
  ::setfsgid(0);
  set_effective_caps_to_permitted();
  mark("overlays");

  build_dev(root, cfg);
  mark("dev");
  build_proc_and_sys(root);
  bind_proc_view(root, cfg);
  mark("proc_sys");
  do_mount("tmpfs", root + "/run", "tmpfs", MS_NOSUID | MS_NODEV,
           "mode=755,size=" + std::to_string(cfg.run_bytes) +
               ",uid=" + std::to_string(cfg.uid_base) + ",gid=" + std::to_string(cfg.uid_base));

  if (::chdir(root.c_str()) != 0) throw_sys("chdir " + root);
  if (::syscall(SYS_pivot_root, ".", ".") != 0) throw_sys("pivot_root");
  if (::umount2(".", MNT_DETACH) != 0) throw_sys("detach old root");
  if (::chdir("/") != 0) throw_sys("chdir /");

  mark("pivot");
  if (::sethostname(cfg.hostname.data(), cfg.hostname.size()) != 0) throw_sys("sethostname");
  bring_up_loopback();
  mark("loopback");
}

void become_box_root(const initproto::Config& cfg, int userns_fd, const PhaseMark& mark) {
  // Our init must survive the box's own memory pressure; the OOM killer picks box processes.
  // (Needs CAP_SYS_RESOURCE, which some hosts withhold; then the init keeps the default score,
  // and its small size keeps it the OOM killer's last choice.)
  {
    int fd = ::open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
    if (fd >= 0) {
      (void)!::write(fd, "-1000", 5);
      ::close(fd);
    }
  }
  for (const auto& r : cfg.rlimits) {
    // Hard limits above our own need CAP_SYS_RESOURCE, which some hosts withhold even from
    // root; then the box gets what we have.
    rlimit cur{};
    ::getrlimit(static_cast<__rlimit_resource>(r.resource), &cur);
    rlimit lim{r.soft, r.hard};
    if (::setrlimit(static_cast<__rlimit_resource>(r.resource), &lim) != 0) {
      lim.rlim_max = std::min<rlim_t>(r.hard, cur.rlim_max);
      lim.rlim_cur = std::min<rlim_t>(r.soft, lim.rlim_max);
      if (::setrlimit(static_cast<__rlimit_resource>(r.resource), &lim) != 0)
        throw_sys("setrlimit " + std::to_string(r.resource));
    }
  }

  mark("limits");
  if (::setns(userns_fd, CLONE_NEWUSER) != 0) throw_sys("enter box user namespace");
  if (::setgroups(0, nullptr) != 0) throw_sys("setgroups");
  if (::setresgid(0, 0, 0) != 0) throw_sys("setresgid");
  if (::setresuid(0, 0, 0) != 0) throw_sys("setresuid");

  std::set<int> keep(cfg.caps.begin(), cfg.caps.end());
  int last_cap = CAP_LAST_CAP;
  if (auto f = ::open("/proc/sys/kernel/cap_last_cap", O_RDONLY | O_CLOEXEC); f >= 0) {
    char buf[16] = {};
    if (::read(f, buf, sizeof buf - 1) > 0) last_cap = std::atoi(buf);
    ::close(f);
  }
  for (int c = 0; c <= last_cap; c++)
    if (!keep.count(c) && ::prctl(PR_CAPBSET_DROP, c, 0, 0, 0) != 0 && errno != EINVAL)
      throw_sys("drop capability " + std::to_string(c));
  __user_cap_header_struct h{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct d[2] = {};
  for (int c : keep) {
    d[c / 32].permitted |= 1u << (c % 32);
    d[c / 32].effective |= 1u << (c % 32);
  }
  if (::syscall(SYS_capset, &h, d) != 0) throw_sys("capset");
  ::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);

  // Box processes run as the same uid as we do; being non-dumpable keeps them from ptracing us or
  // reading our memory and descriptors through /proc.
  if (::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) throw_sys("PR_SET_DUMPABLE");

  mark("identity");
  // The seccomp filter goes on us, once: every box process descends from us and inherits it
  // (attaching it per exec would cost a filter compilation each time). We only use system calls
  // the filter allows.
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) throw_sys("PR_SET_NO_NEW_PRIVS");
  sock_fprog prog{};
  prog.len = static_cast<unsigned short>(cfg.seccomp_bpf.size() / sizeof(sock_filter));
  prog.filter = reinterpret_cast<sock_filter*>(const_cast<char*>(cfg.seccomp_bpf.data()));
  if (::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0)
    throw_sys("install seccomp filter");
  mark("seccomp");
}

}  // namespace upstream::init
