#include "storage/host_image.h"

#include <dirent.h>
#include <fcntl.h>
#include <glob.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/fd.h"
#include "common/strings.h"
#include "common/time.h"

namespace upstream::storage {

namespace {

using nlohmann::json;

const char* kCandidateSystemDirs[] = {"usr",  "etc", "var",   "opt",   "bin",
                                      "sbin", "lib", "lib32", "lib64", "libx32"};
// What a generation holds changes with upstream itself: a generation made by an older format is
// rebuilt (2: package managers' "externally managed" markers removed).
constexpr int kFormat = 2;

// Markers by which the host's package manager keeps other installers out of its directories
// (PEP 668: Debian's pip refuses to install without --break-system-packages). In a box the system
// is the box's own writable layer, as in the official python images, so they are hidden; relative
// to the system directory they are found in.
std::vector<std::string> installer_markers(const std::string& sysdir_path) {
  std::vector<std::string> out;
  glob_t g{};
  std::string pattern = sysdir_path + "/lib/python3*/EXTERNALLY-MANAGED";
  if (::glob(pattern.c_str(), GLOB_NOSORT, nullptr, &g) == 0)
    for (size_t i = 0; i < g.gl_pathc; i++)
      out.push_back(std::string(g.gl_pathv[i]).substr(sysdir_path.size() + 1));
  ::globfree(&g);
  return out;
}

const char* kFreshTopDirs[] = {"proc", "sys",  "dev", "run", "tmp",
                               "home", "root", "mnt", "srv", "media"};

std::string fingerprint(const std::string& host_root) {
  std::string fp;
  for (const char* p : {"etc", "usr", "var", "opt", "var/lib/dpkg/status", "var/lib/dpkg", ""}) {
    struct stat st;
    std::string path = host_root + "/" + p;
    if (::stat(path.c_str(), &st) == 0)
      fp += std::string(p) + ":" + std::to_string(st.st_mtim.tv_sec) + "." +
            std::to_string(st.st_mtim.tv_nsec) + ";";
  }
  return fp;
}

// Copies mode and owner of a host directory to the mask's copy, so a mask directory never
// changes what the box sees of the directory itself.
void mirror_dir(const std::string& host_path, const std::string& mask_path) {
  struct stat st;
  if (::lstat(host_path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) throw_sys("stat " + host_path);
  if (::mkdir(mask_path.c_str(), st.st_mode & 07777) != 0 && errno != EEXIST)
    throw_sys("mkdir " + mask_path);
  ::chmod(mask_path.c_str(), st.st_mode & 07777);
  ::lchown(mask_path.c_str(), st.st_uid, st.st_gid);
}

void ensure_mask_parents(const std::string& host_sysdir, const std::string& mask_sysdir,
                         const std::string& rel) {
  std::string cur;
  auto parts = split(rel, '/');
  for (size_t i = 0; i + 1 < parts.size(); i++) {
    cur += (cur.empty() ? "" : "/") + parts[i];
    struct stat st;
    if (::lstat((mask_sysdir + "/" + cur).c_str(), &st) == 0) continue;
    mirror_dir(host_sysdir + "/" + cur, mask_sysdir + "/" + cur);
  }
}

void whiteout(const std::string& path) {
  ::unlink(path.c_str());
  if (::mknod(path.c_str(), S_IFCHR | 0000, makedev(0, 0)) != 0) throw_sys("whiteout " + path);
}

// An empty directory that hides the host's directory below it entirely. Overlay lists an opaque
// directory straight from this layer, so it must hold nothing (not even whiteouts).
void opaque_dir(const std::string& path, mode_t mode) {
  remove_tree(path);
  if (::mkdir(path.c_str(), mode) != 0) throw_sys("mkdir " + path);
  ::chmod(path.c_str(), mode);
  if (::setxattr(path.c_str(), "trusted.overlay.opaque", "y", 1, 0) != 0)
    throw_sys("mark opaque " + path);
}

struct Walker {
  dev_t dev;
  std::set<std::string> skip;       // absolute host paths not to descend into (hidden separately)
  std::vector<std::string> hidden;  // relative to the system dir
};

void walk(Walker& w, int dirfd, const std::string& abs, const std::string& rel) {
  DIR* d = ::fdopendir(dirfd);
  if (!d) {
    ::close(dirfd);
    return;
  }
  while (dirent* e = ::readdir(d)) {
    if (!std::strcmp(e->d_name, ".") || !std::strcmp(e->d_name, "..")) continue;
    if (e->d_type == DT_LNK) continue;
    struct stat st;
    if (::fstatat(::dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
    if (S_ISLNK(st.st_mode)) continue;
    std::string crel = rel.empty() ? e->d_name : rel + "/" + e->d_name;
    std::string cabs = abs + "/" + e->d_name;
    bool dir = S_ISDIR(st.st_mode);
    if (w.skip.count(cabs)) continue;
    if (host_entry_hidden(st.st_mode, dir)) {
      w.hidden.push_back(crel);
      continue;
    }
    // Other filesystems mounted below a system directory are not part of its overlay layer.
    if (dir && st.st_dev == w.dev) {
      int fd = ::openat(::dirfd(d), e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (fd >= 0) walk(w, fd, cabs, crel);
    }
  }
  ::closedir(d);
}

std::string pick_shell(const std::string& host_root) {
  for (const char* s : {"/bin/bash", "/usr/bin/bash", "/bin/sh"})
    if (::access((host_root + s).c_str(), X_OK) == 0) return s;
  return "/bin/sh";
}

void write_file(const std::string& path, const std::string& text, mode_t mode) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode));
  if (!fd) throw_sys("create " + path);
  write_all(fd.get(), text);
  ::fchmod(fd.get(), mode);
}

void copy_tree_owned(const std::string& from, const std::string& to, uid_t uid, gid_t gid) {
  DIR* d = ::opendir(from.c_str());
  if (!d) return;
  while (dirent* e = ::readdir(d)) {
    if (!std::strcmp(e->d_name, ".") || !std::strcmp(e->d_name, "..")) continue;
    std::string s = from + "/" + e->d_name, t = to + "/" + e->d_name;
    struct stat st;
    if (::lstat(s.c_str(), &st) != 0 || !(st.st_mode & S_IROTH)) continue;
    if (S_ISDIR(st.st_mode)) {
      ::mkdir(t.c_str(), st.st_mode & 0777);
      copy_tree_owned(s, t, uid, gid);
    } else if (S_ISREG(st.st_mode)) {
      write_file(t, read_file(s, 1 << 20), st.st_mode & 0777);
    } else {
      continue;
    }
    ::lchown(t.c_str(), uid, gid);
  }
  ::closedir(d);
}

HostImage load(const Layout& layout, const std::string& gen) {
  HostImage img;
  img.generation = gen;
  img.dir = layout.host_image_dir() + "/" + gen;
  json m = json::parse(read_file(img.dir + "/manifest.json"));
  img.system_dirs = m.at("system_dirs").get<std::vector<std::string>>();
  img.masked = m.value("masked", uint64_t{0});
  img.built_at = m.value("built_at", int64_t{0});
  return img;
}

HostImage build(const Layout& layout, const HostImageOptions& opts) {
  const std::string& hr = opts.host_root;
  std::string gen = "g" + std::to_string(now_ms()) + "-" + random_hex(6);
  std::string dir = layout.host_image_dir() + "/" + gen;
  std::string tmp = dir + ".tmp";
  remove_tree(tmp);
  make_dirs(tmp + "/mask", 0700);
  ::chmod(tmp.c_str(), 0755);
  ::chmod((tmp + "/mask").c_str(), 0755);
  std::string skel = tmp + "/skel";
  if (::mkdir(skel.c_str(), 0755) != 0) throw_sys("mkdir " + skel);

  std::vector<std::string> sysdirs;
  std::vector<std::pair<std::string, std::string>> links;
  for (const char* c : kCandidateSystemDirs) {
    std::string p = hr + "/" + c;
    struct stat st;
    if (::lstat(p.c_str(), &st) != 0) continue;
    if (S_ISDIR(st.st_mode)) {
      sysdirs.push_back(c);
    } else if (S_ISLNK(st.st_mode)) {
      char buf[4096];
      ssize_t n = ::readlink(p.c_str(), buf, sizeof buf - 1);
      if (n > 0) links.emplace_back(c, std::string(buf, static_cast<size_t>(n)));
    }
  }
  if (std::find(sysdirs.begin(), sysdirs.end(), "usr") == sysdirs.end() ||
      std::find(sysdirs.begin(), sysdirs.end(), "etc") == sysdirs.end())
    throw Error(Errc::unavailable, "the host has no /usr or /etc to use as the host image");

  // The skeleton root.
  for (const auto& s : sysdirs)
    if (::mkdir((skel + "/" + s).c_str(), 0755) != 0) throw_sys("mkdir skel/" + s);
  for (const char* f : kFreshTopDirs) {
    mode_t mode = std::string(f) == "tmp" ? 01777 : std::string(f) == "root" ? 0700 : 0755;
    std::string p = skel + "/" + f;
    if (::mkdir(p.c_str(), mode) != 0) throw_sys("mkdir " + p);
    ::chmod(p.c_str(), mode);
  }
  for (const auto& [name, target] : links)
    if (::symlink(target.c_str(), (skel + "/" + name).c_str()) != 0)
      throw_sys("symlink skel/" + name);
  std::string home = skel + "/home/user";
  if (::mkdir(home.c_str(), 0755) != 0) throw_sys("mkdir " + home);
  copy_tree_owned(hr + "/etc/skel", home, 1000, 1000);
  ::chown(home.c_str(), 1000, 1000);

  // The mask: one layer per system directory.
  uint64_t masked = 0;
  std::set<std::string> skip;
  for (const auto& h : opts.hidden) skip.insert(hr == "/" ? h : hr + h);
  for (const auto& s : sysdirs) {
    std::string host_dir = hr + "/" + s, mask_dir = tmp + "/mask/" + s;
    mirror_dir(host_dir, mask_dir);
    struct stat st;
    ::stat(host_dir.c_str(), &st);
    Walker w{st.st_dev, skip, {}};
    int fd = ::open(host_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) walk(w, fd, host_dir, "");
    // Paths hidden by configuration (our own state directory) that live in this system dir.
    for (const auto& h : skip) {
      if (!starts_with(h, host_dir + "/")) continue;
      std::string rel = h.substr(host_dir.size() + 1);
      struct stat hs;
      if (::lstat(h.c_str(), &hs) == 0) w.hidden.push_back(rel);
    }
    for (const auto& rel : installer_markers(host_dir)) w.hidden.push_back(rel);
    for (const auto& rel : w.hidden) {
      ensure_mask_parents(host_dir, mask_dir, rel);
      whiteout(mask_dir + "/" + rel);
      masked++;
    }
  }

  // Accounts: the host's system accounts plus `user`, every password locked.
  std::string etc = tmp + "/mask/etc";
  std::string shell = pick_shell(hr);
  std::string passwd = filter_passwd(read_file(hr + "/etc/passwd"), shell);
  std::set<std::string> users;
  std::string shadow;
  for (const auto& line : split(passwd, '\n')) {
    auto f = split(line, ':');
    if (f.size() < 7) continue;
    users.insert(f[0]);
    shadow += f[0] + ":*:19000:0:99999:7:::\n";
  }
  std::string group = filter_group(read_file(hr + "/etc/group"), users);
  std::string gshadow;
  for (const auto& line : split(group, '\n')) {
    auto f = split(line, ':');
    if (f.size() >= 4) gshadow += f[0] + ":*::" + f[3] + "\n";
  }
  for (const char* f : {"passwd", "group", "shadow", "gshadow", "passwd-", "group-", "shadow-",
                        "gshadow-", "machine-id", "subuid-", "subgid-"}) {
    std::string p = etc + "/" + f;
    if (::access(p.c_str(), F_OK) == 0 || ::access((hr + "/etc/" + f).c_str(), F_OK) == 0)
      ::unlink(p.c_str());
  }
  write_file(etc + "/passwd", passwd, 0644);
  write_file(etc + "/group", group, 0644);
  write_file(etc + "/shadow", shadow, 0640);
  write_file(etc + "/gshadow", gshadow, 0640);
  ::chown((etc + "/shadow").c_str(), 0, 42);
  ::chown((etc + "/gshadow").c_str(), 0, 42);
  for (const char* f :
       {"passwd-", "group-", "shadow-", "gshadow-", "machine-id", "subuid-", "subgid-"})
    if (::access((hr + "/etc/" + f).c_str(), F_OK) == 0) whiteout(etc + "/" + f);

  // Fresh, empty /var/log and /var/tmp: the host's logs are its own.
  if (std::find(sysdirs.begin(), sysdirs.end(), "var") != sysdirs.end()) {
    std::string var = tmp + "/mask/var";
    if (::access((hr + "/var/log").c_str(), F_OK) == 0) opaque_dir(var + "/log", 0755);
    if (::access((hr + "/var/tmp").c_str(), F_OK) == 0) opaque_dir(var + "/tmp", 01777);
  }

  json manifest = {{"format", kFormat}, {"built_at", now_ms()},           {"system_dirs", sysdirs},
                   {"masked", masked},  {"fingerprint", fingerprint(hr)}, {"host_root", hr}};
  write_file(tmp + "/manifest.json", manifest.dump(2), 0644);
  if (::rename(tmp.c_str(), dir.c_str()) != 0) throw_sys("rename " + tmp);
  // Point "current" at the new generation atomically.
  std::string link_tmp = layout.host_image_dir() + "/current." + random_hex(6);
  if (::symlink(gen.c_str(), link_tmp.c_str()) != 0) throw_sys("symlink " + link_tmp);
  if (::rename(link_tmp.c_str(), (layout.host_image_dir() + "/current").c_str()) != 0)
    throw_sys("switch host image generation");
  return load(layout, gen);
}

}  // namespace

bool host_entry_hidden(unsigned mode, bool is_dir) {
  if (is_dir) return (mode & (S_IROTH | S_IXOTH)) != (S_IROTH | S_IXOTH);
  return (mode & S_IROTH) == 0;
}

std::string filter_passwd(const std::string& text, const std::string& user_shell) {
  std::string out;
  for (const auto& line : split(text, '\n')) {
    auto f = split(line, ':');
    if (f.size() < 7) continue;
    unsigned long uid = std::strtoul(f[2].c_str(), nullptr, 10);
    if ((uid >= 1000 && uid != 65534) || f[0] == "user") continue;
    f[1] = "x";
    out += join(f, ":") + "\n";
  }
  out += "user:x:1000:1000:user:/home/user:" + user_shell + "\n";
  return out;
}

std::string filter_group(const std::string& text, const std::set<std::string>& kept_users) {
  std::string out;
  for (const auto& line : split(text, '\n')) {
    auto f = split(line, ':');
    if (f.size() < 4) continue;
    unsigned long gid = std::strtoul(f[2].c_str(), nullptr, 10);
    if ((gid >= 1000 && gid != 65534) || f[0] == "user") continue;
    std::vector<std::string> members;
    for (const auto& m : split(f[3], ','))
      if (!m.empty() && kept_users.count(m)) members.push_back(m);
    f[1] = "x";
    f[3] = join(members, ",");
    out += join(f, ":") + "\n";
  }
  out += "user:x:1000:\n";
  return out;
}

std::optional<HostImage> current_host_image(const Layout& layout) {
  char buf[256];
  ssize_t n = ::readlink((layout.host_image_dir() + "/current").c_str(), buf, sizeof buf - 1);
  if (n <= 0) return std::nullopt;
  try {
    return load(layout, std::string(buf, static_cast<size_t>(n)));
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

HostImage ensure_host_image(const Layout& layout, const HostImageOptions& opts, bool rebuild,
                            const std::set<std::string>& in_use) {
  make_dirs(layout.host_image_dir(), 0700);
  // Why `cur` must be rebuilt; empty when it is fresh.
  auto stale = [&](const std::optional<HostImage>& cur) -> std::string {
    if (rebuild) return "a rebuild was asked for";
    if (!cur) return "there is none yet";
    if (now_ms() - cur->built_at > opts.max_age_ms)
      return "the last one is older than " +
             format_duration_ms(static_cast<uint64_t>(opts.max_age_ms));
    try {
      json m = json::parse(read_file(cur->dir + "/manifest.json"));
      if (m.value("format", 1) != kFormat) return "the last one was made by an older upstream";
      if (m.value("fingerprint", "") == fingerprint(opts.host_root) &&
          m.value("host_root", "") == opts.host_root)
        return "";
    } catch (const std::exception&) {
      return "the last one's manifest does not read";
    }
    return "the host's packages or /etc changed";
  };
  std::optional<HostImage> cur = current_host_image(layout);
  if (stale(cur).empty()) return *cur;
  FileLock lock(layout.lock("host-image"));
  cur = current_host_image(layout);  // another process may have built it meanwhile
  std::string why = stale(cur);
  if (why.empty()) return *cur;
  if (opts.on_build) opts.on_build(why);
  HostImage img = build(layout, opts);
  // Remove generations no running box uses.
  DIR* d = ::opendir(layout.host_image_dir().c_str());
  if (d) {
    std::vector<std::string> old;
    while (dirent* e = ::readdir(d)) {
      std::string name = e->d_name;
      if (name[0] != 'g' || name == img.generation || in_use.count(name)) continue;
      old.push_back(name);
    }
    ::closedir(d);
    for (const auto& o : old) remove_tree(layout.host_image_dir() + "/" + o);
  }
  return img;
}

}  // namespace upstream::storage
