// File sessions: operations are carried out by a worker inside the box (see init/fileworker),
// so every path is resolved by the kernel inside the box root. What this side adds is the host
// end of copies, where entries coming from a box are treated as untrusted.
#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <locale.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <functional>
#include <map>

#include "common/error.h"
#include "common/frame.h"
#include "common/ipc.h"
#include "common/strings.h"
#include "common/time.h"
#include "engine/host_tree.h"
#include "engine/impl.h"

namespace upstream {

using nlohmann::json;

namespace {

constexpr size_t kChunk = 256 * 1024;

// libarchive converts names through the calling thread's locale. Under the C locale a name
// that is not ASCII cannot be converted, and the entry is marked hdrcharset=BINARY, which GNU
// tar warns about. For an archive's life the thread uses C.UTF-8, so such names are stored as
// the UTF-8 that pax defines; a name that is not valid UTF-8 is still stored as its bytes.
class Utf8Names {
 public:
  Utf8Names() : locale_(::newlocale(LC_CTYPE_MASK, "C.UTF-8", nullptr)) {
    if (locale_) previous_ = ::uselocale(locale_);
  }
  ~Utf8Names() {
    if (!locale_) return;
    ::uselocale(previous_);
    ::freelocale(locale_);
  }
  Utf8Names(const Utf8Names&) = delete;
  Utf8Names& operator=(const Utf8Names&) = delete;

 private:
  locale_t locale_;
  locale_t previous_ = nullptr;
};

FileInfo info_from(const json& j) {
  FileInfo f;
  f.name = j.value("name", "");
  f.path = j.value("path", "");
  f.type = j.value("type", "");
  f.mode = j.value("mode", 0u);
  f.size = j.value("size", uint64_t{0});
  f.mtime_ms = j.value("mtime_ms", int64_t{0});
  f.uid = j.value("uid", 0u);
  f.gid = j.value("gid", 0u);
  f.target = j.value("target", "");
  return f;
}

struct ArchiveReader {
  archive* a = archive_read_new();
  ~ArchiveReader() { archive_read_free(a); }
};

// Calls `f` with each entry of the tar archive on `fd` that goes into a box, as the file
// worker's put takes it (path, type, mode, mtime, link target), and the archive positioned at
// its data. Throws invalid_argument naming the first entry that is not a plain relative path.
void for_each_tar_entry(int fd, const std::function<void(const json&, archive*)>& f) {
  ArchiveReader r;
  archive_read_support_filter_all(r.a);
  archive_read_support_format_tar(r.a);
  archive_read_support_format_gnutar(r.a);
  if (archive_read_open_fd(r.a, fd, 1 << 16) != ARCHIVE_OK)
    throw_invalid(std::string("not a tar archive: ") + archive_error_string(r.a));
  archive_entry* e;
  for (;;) {
    int rc = archive_read_next_header(r.a, &e);
    if (rc == ARCHIVE_EOF) break;
    if (rc < ARCHIVE_WARN)
      throw_invalid(std::string("bad tar archive: ") + archive_error_string(r.a));
    std::string name = archive_entry_pathname(e) ? archive_entry_pathname(e) : "";
    while (starts_with(name, "./")) name = name.substr(2);
    while (!name.empty() && name.back() == '/') name.pop_back();
    if (name.empty() || name == ".") continue;
    if (!plain_relative(name))
      throw_invalid("tar entry '" + name + "' is not a plain relative path");
    json j = {{"path", name},
              {"mode", archive_entry_perm(e)},
              {"mtime_ms", archive_entry_mtime(e) * 1000},
              {"size", archive_entry_size(e)}};
    mode_t t = archive_entry_filetype(e);
    if (archive_entry_hardlink(e)) {
      std::string target = archive_entry_hardlink(e);
      while (starts_with(target, "./")) target = target.substr(2);
      if (!plain_relative(target))
        throw_invalid("tar hard link '" + name + "' points outside the archive");
      j["type"] = "hardlink";
      j["target"] = target;
    } else if (t == AE_IFREG) {
      j["type"] = "file";
    } else if (t == AE_IFDIR) {
      j["type"] = "dir";
    } else if (t == AE_IFLNK) {
      j["type"] = "symlink";
      j["target"] = archive_entry_symlink(e) ? archive_entry_symlink(e) : "";
    } else {
      continue;  // devices, fifos and sockets are not carried into boxes
    }
    f(j, r.a);
  }
}

// Checks a whole tar archive before anything of it is written: every entry a plain relative
// path, none going through a symlink, file or hard link the archive itself made (the box would
// refuse it half-way), hard links only to files before them, and no more than `limit` bytes
// unpacked.
void check_tar(int fd, uint64_t limit) {
  std::map<std::string, std::string> made;  // path -> type, of the entries so far
  uint64_t total = 0;
  for_each_tar_entry(fd, [&](const json& entry, archive* a) {
    std::string path = entry["path"], type = entry["type"];
    for (size_t slash = path.find('/'); slash != std::string::npos;
         slash = path.find('/', slash + 1)) {
      auto it = made.find(path.substr(0, slash));
      if (it != made.end() && it->second != "dir")
        throw_invalid("tar entry '" + path + "' goes through the " + it->second + " '" + it->first +
                      "' of the same archive");
    }
    if (type == "hardlink") {
      auto it = made.find(entry["target"].get<std::string>());
      if (it == made.end() || it->second != "file")
        throw_invalid("tar hard link '" + path + "' is not to a file before it in the archive");
    }
    if (auto it = made.find(path); it != made.end() && (it->second == "dir") != (type == "dir"))
      throw_invalid("tar entry '" + path + "' is both a " + it->second + " and a " + type);
    made[path] = type == "hardlink" ? "file" : type;
    if (type != "file") return;
    // Its data is read (not trusted from the header) and dropped: a small compressed archive can
    // unpack to far more than it weighs.
    const void* buf;
    size_t size;
    la_int64_t off;
    int r;
    uint64_t length = 0;  // holes of sparse entries included: they are sent as zeros
    while ((r = archive_read_data_block(a, &buf, &size, &off)) == ARCHIVE_OK) {
      uint64_t end = static_cast<uint64_t>(off) + size;
      if (end > length) {
        total += end - length;
        length = end;
      }
      if (total > limit)
        throw Error(Errc::resource_exhausted, "the tar archive unpacks to more than " +
                                                  format_bytes(limit) +
                                                  ", the most this box takes");
    }
    if (r != ARCHIVE_EOF) throw_invalid(std::string("bad tar archive: ") + archive_error_string(a));
  });
}

class RemoteFiles : public FileSession {
 public:
  RemoteFiles(Engine::Impl& impl, BoxRecord box) : I_(impl), box_(std::move(box)) {}
  ~RemoteFiles() override {
    to_.reset();
    from_.reset();
    if (maintenance_) {
      try {
        I_.stop_init(box_, 0);
      } catch (...) {
      }
    }
  }

  void start(const std::string& user) {
    UniqueFd conn = I_.connect(box_);
    Pipe in = make_pipe(O_CLOEXEC), out = make_pipe(O_CLOEXEC);
    ipc::send(conn.get(), {{"op", "files"}, {"user", user}}, {in.read.get(), out.write.get()});
    auto reply = ipc::recv_wait(conn.get(), 30000);
    if (!reply || !reply->body.value("ok", false))
      throw Error(reply ? errc_from_name(reply->body.value("kind", "")) : Errc::unavailable,
                  reply ? reply->body.value("error", std::string("file worker failed"))
                        : "the box stopped");
    to_ = std::move(in.write);
    from_ = std::move(out.read);
  }

  std::optional<FileLock> lock_;
  bool maintenance_ = false;

  FileInfo stat(const std::string& path, bool follow) override {
    json r = call({{"op", "stat"}, {"path", path}, {"follow", follow}});
    return info_from(r.at("info"));
  }

  std::vector<FileInfo> list(const std::string& path) override {
    json r = call({{"op", "list"}, {"path", path}});
    std::vector<FileInfo> out;
    for (const auto& e : r.at("entries")) out.push_back(info_from(e));
    return out;
  }

  std::string read(const std::string& path, uint64_t max_bytes) override {
    send({{"op", "read"}, {"path", path}});
    json head = reply();
    uint64_t size = head.at("info").value("size", uint64_t{0});
    if (size > max_bytes) {
      drain_data(-1);
      throw Error(Errc::resource_exhausted, path + " is " + format_bytes(size) + ", more than " +
                                                format_bytes(max_bytes) + " can be read at once");
    }
    std::string out;
    receive_data([&](const char* p, size_t n) {
      if (out.size() + n > max_bytes)
        throw Error(Errc::resource_exhausted, path + " grew while being read");
      out.append(p, n);
    });
    return out;
  }

  uint64_t read_to_fd(const std::string& path, int fd) override {
    send({{"op", "read"}, {"path", path}});
    reply();
    return receive_data([&](const char* p, size_t n) { write_all(fd, p, n); });
  }

  void write(const std::string& path, std::string_view data, std::optional<uint32_t> mode,
             bool mkdirs) override {
    json req = {{"op", "write"}, {"path", path}, {"mkdirs", mkdirs}};
    if (mode) req["mode"] = *mode;
    send(req);
    for (size_t off = 0; off < data.size(); off += kChunk) send_data(data.substr(off, kChunk));
    frame::write_header(to_.get(), {{"end", true}});
    reply();
  }

  uint64_t write_from_fd(const std::string& path, int fd, std::optional<uint32_t> mode,
                         bool mkdirs) override {
    json req = {{"op", "write"}, {"path", path}, {"mkdirs", mkdirs}};
    if (mode) req["mode"] = *mode;
    send(req);
    uint64_t total = pump_fd(fd);
    frame::write_header(to_.get(), {{"end", true}});
    reply();
    return total;
  }

  void mkdir(const std::string& path, bool parents, uint32_t mode) override {
    call({{"op", "mkdir"}, {"path", path}, {"parents", parents}, {"mode", mode}});
  }

  void remove(const std::string& path, bool recursive) override {
    call({{"op", "remove"}, {"path", path}, {"recursive", recursive}});
  }

  void move(const std::string& from, const std::string& to, bool overwrite) override {
    call({{"op", "move"}, {"from", from}, {"to", to}, {"overwrite", overwrite}});
  }

  uint64_t download_tar(const std::string& path, int out_fd) override {
    // ustar headers, and pax ones only where a name is too long or not ASCII.
    Utf8Names utf8;
    archive* a = archive_write_new();
    archive_write_set_format_pax_restricted(a);
    if (archive_write_open_fd(a, out_fd) != ARCHIVE_OK) {
      std::string e = archive_error_string(a);
      archive_write_free(a);
      throw Error("tar: " + e);
    }
    uint64_t count = 0;
    try {
      walk(path, [&](const json& e) {
        archive_entry* ent = archive_entry_new();
        entry_to_archive(e, ent);
        // A warning means a name was stored as its bytes (not UTF-8): the entry is written.
        if (archive_write_header(a, ent) < ARCHIVE_WARN) {
          std::string msg = archive_error_string(a);
          archive_entry_free(ent);
          throw Error("tar: " + msg);
        }
        archive_entry_free(ent);
        count++;
        if (e.value("type", "") == "file" && !e.contains("error")) {
          uint64_t declared = e.value("size", uint64_t{0}), written = 0;
          receive_data([&](const char* p, size_t n) {
            // A file that grew while being read is cut at the size its header announced.
            size_t take = static_cast<size_t>(std::min<uint64_t>(n, declared - written));
            if (take) archive_write_data(a, p, take);
            written += take;
          });
          // A file that shrank is padded, so the archive stays well-formed.
          std::string zeros(64 * 1024, '\0');
          while (written < declared) {
            size_t take = static_cast<size_t>(std::min<uint64_t>(zeros.size(), declared - written));
            archive_write_data(a, zeros.data(), take);
            written += take;
          }
        }
      });
    } catch (...) {
      archive_write_free(a);
      throw;
    }
    archive_write_close(a);
    archive_write_free(a);
    return count;
  }

  uint64_t upload_tar(const std::string& dir, int in_fd) override {
    // Read twice, never held in memory: once to check every entry (so a bad archive changes
    // nothing in the box) and to add up what it unpacks to, then again to stream the entries to
    // the box. A stream that cannot be read twice (a pipe) is spooled to the state directory
    // first, compressed as it came.
    UniqueFd spool;
    if (::lseek(in_fd, 0, SEEK_CUR) < 0) {
      spool.reset(::open(I_.layout.tmp_dir().c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600));
      if (!spool) throw_sys("spool the tar archive in " + I_.layout.tmp_dir());
      char buf[1 << 16];
      for (;;) {
        ssize_t n = ::read(in_fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) throw_sys("read the tar archive");
        if (n == 0) break;
        write_all(spool.get(), buf, static_cast<size_t>(n));
      }
      if (::lseek(spool.get(), 0, SEEK_SET) < 0) throw_sys("rewind the spooled tar archive");
      in_fd = spool.get();
    }
    off_t start = spool ? 0 : ::lseek(in_fd, 0, SEEK_CUR);
    uint64_t limit = I_.upload_limit(box_);
    check_tar(in_fd, limit);
    if (::lseek(in_fd, start, SEEK_SET) < 0) throw_sys("rewind the tar archive");
    send({{"op", "put"}, {"path", dir}});
    for_each_tar_entry(in_fd, [&](const json& entry, archive* a) {
      frame::write_header(to_.get(), {{"entry", entry}});
      if (entry["type"] != "file") return;
      const void* buf;
      size_t size;
      la_int64_t off;
      uint64_t at = 0;
      int r;
      std::string zeros;
      while ((r = archive_read_data_block(a, &buf, &size, &off)) == ARCHIVE_OK) {
        // Holes of sparse entries are sent as zeros.
        for (uint64_t gap = static_cast<uint64_t>(off) - std::min<uint64_t>(at, off); gap;) {
          zeros.resize(std::min<uint64_t>(gap, kChunk), '\0');
          send_data(zeros);
          gap -= zeros.size();
          at += zeros.size();
        }
        for (size_t o = 0; o < size; o += kChunk)
          send_data(
              std::string_view(static_cast<const char*>(buf) + o, std::min(kChunk, size - o)));
        at += size;
      }
      if (r != ARCHIVE_EOF)
        throw Error(Errc::internal, std::string("the tar archive changed while it was read: ") +
                                        archive_error_string(a));
      frame::write_header(to_.get(), {{"end", true}});
    });
    frame::write_header(to_.get(), {{"done", true}});
    return reply().value("count", uint64_t{0});
  }

  void copy_out(const std::string& box_path, const std::string& host_path) override {
    FileInfo src = stat(box_path, false);
    CopyOutPlan plan = plan_copy_out(host_path, src.type == "dir");
    UniqueFd root(::open(plan.root_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!root) throw_sys("open " + plan.root_dir);
    walk(box_path, [&](const json& e) {
      std::string rel = e.value("path", "");
      if (!plain_relative(rel))
        throw Error(Errc::invalid_argument, "the box sent an unsafe path '" + rel + "'");
      if (e.value("type", "") == "file" && e.contains("error")) return;  // unreadable: no data
      auto pump = [&](const std::function<void(const char*, size_t)>& sink) { receive_data(sink); };
      auto dest = plan.map(rel);
      if (!dest) {
        if (e.value("type", "") == "file") pump([](const char*, size_t) {});
        return;
      }
      HostEntry he{e.value("type", ""), e.value("mode", 0644u), e.value("target", "")};
      write_host_entry(root.get(), *dest, he, pump);
    });
  }

  void copy_in(const std::string& host_path, const std::string& box_dest) override {
    CopyInPlan plan = plan_copy_in(host_path, box_dest, [&](const std::string& p) {
      auto f = try_stat(p);
      return f ? std::optional<std::string>(f->type) : std::nullopt;
    });
    const std::string &dest_dir = plan.dir, &top = plan.top;
    send({{"op", "put"}, {"path", dest_dir}});
    std::string err;
    try {
      send_host_tree(host_path, top);
    } catch (const Error& e) {
      err = e.what();
    }
    frame::write_header(to_.get(), {{"done", true}});
    reply();
    if (!err.empty()) throw Error(Errc::failed_precondition, err);
  }

 private:
  // stat that answers "missing" without an exception (the common case for a copy's target).
  std::optional<FileInfo> try_stat(const std::string& path) {
    send({{"op", "stat"}, {"path", path}, {"follow", true}});
    auto h = frame::read_header(from_.get());
    if (!h) throw Error(Errc::unavailable, "the box's file worker went away");
    if (h->value("ok", false)) return info_from(h->at("info"));
    if (h->value("kind", "") == "not_found") return std::nullopt;
    throw Error(errc_from_name(h->value("kind", "internal")),
                h->value("error", std::string("stat failed")));
  }
  void send(const json& h) { frame::write_header(to_.get(), h); }
  void send_data(std::string_view d) {
    frame::write_header(to_.get(), {{"data", d.size()}});
    write_all(to_.get(), d.data(), d.size());
  }
  json reply() {
    auto h = frame::read_header(from_.get());
    if (!h) throw Error(Errc::unavailable, "the box's file worker went away");
    if (!h->value("ok", false))
      throw Error(errc_from_name(h->value("kind", "internal")),
                  h->value("error", std::string("file operation failed")));
    return *h;
  }
  json call(const json& req) {
    send(req);
    return reply();
  }
  uint64_t receive_data(const std::function<void(const char*, size_t)>& f) {
    std::vector<char> buf;
    uint64_t total = 0;
    for (;;) {
      auto h = frame::read_header(from_.get());
      if (!h) throw Error(Errc::unavailable, "the box's file worker went away");
      if (h->value("end", false)) {
        if (h->contains("error"))
          throw Error(Errc::internal, "read failed: " + (*h)["error"].get<std::string>());
        return total;
      }
      size_t n = h->value("data", size_t{0});
      buf.resize(n);
      frame::read_exact(from_.get(), buf.data(), n);
      f(buf.data(), n);
      total += n;
    }
  }
  void drain_data(int) {
    receive_data([](const char*, size_t) {});
  }
  uint64_t pump_fd(int fd) {
    std::vector<char> buf(kChunk);
    uint64_t total = 0;
    for (;;) {
      ssize_t n = ::read(fd, buf.data(), buf.size());
      if (n < 0) {
        if (errno == EINTR) continue;
        throw_sys("read");
      }
      if (n == 0) return total;
      send_data(std::string_view(buf.data(), static_cast<size_t>(n)));
      total += static_cast<uint64_t>(n);
    }
  }
  void walk(const std::string& path, const std::function<void(const json&)>& on_entry) {
    send({{"op", "walk"}, {"path", path}});
    reply();
    for (;;) {
      auto h = frame::read_header(from_.get());
      if (!h) throw Error(Errc::unavailable, "the box's file worker went away");
      if (h->value("done", false)) return;
      if (!h->contains("entry")) throw Error("unexpected frame from the file worker");
      on_entry((*h)["entry"]);
    }
  }
  static void entry_to_archive(const json& e, archive_entry* ent) {
    archive_entry_set_pathname(ent, e.value("path", "").c_str());
    archive_entry_set_perm(ent, static_cast<mode_t>(e.value("mode", 0644)));
    archive_entry_set_mtime(ent, e.value("mtime_ms", int64_t{0}) / 1000, 0);
    archive_entry_set_uid(ent, e.value("uid", 0));
    archive_entry_set_gid(ent, e.value("gid", 0));
    std::string type = e.value("type", "");
    if (type == "dir") {
      archive_entry_set_filetype(ent, AE_IFDIR);
    } else if (type == "symlink") {
      archive_entry_set_filetype(ent, AE_IFLNK);
      archive_entry_set_symlink(ent, e.value("target", "").c_str());
    } else if (type == "file" && !e.contains("error")) {
      archive_entry_set_filetype(ent, AE_IFREG);
      archive_entry_set_size(ent, static_cast<la_int64_t>(e.value("size", uint64_t{0})));
    } else {
      archive_entry_set_filetype(ent, AE_IFREG);
      archive_entry_set_size(ent, 0);
    }
  }
  void send_host_tree(const std::string& path, const std::string& rel) {
    struct stat st;
    if (::lstat(path.c_str(), &st) != 0) throw_sys("stat " + path);
    json e = {{"path", rel},
              {"mode", st.st_mode & 07777},
              {"mtime_ms", static_cast<int64_t>(st.st_mtim.tv_sec) * 1000}};
    if (S_ISDIR(st.st_mode)) {
      e["type"] = "dir";
      frame::write_header(to_.get(), {{"entry", e}});
      DIR* d = ::opendir(path.c_str());
      if (!d) throw_sys("open " + path);
      std::vector<std::string> names;
      while (dirent* de = ::readdir(d))
        if (std::strcmp(de->d_name, ".") && std::strcmp(de->d_name, ".."))
          names.emplace_back(de->d_name);
      ::closedir(d);
      for (const auto& n : names) send_host_tree(path + "/" + n, rel + "/" + n);
    } else if (S_ISLNK(st.st_mode)) {
      char buf[4096];
      ssize_t n = ::readlink(path.c_str(), buf, sizeof buf);
      e["type"] = "symlink";
      e["target"] = std::string(buf, n > 0 ? static_cast<size_t>(n) : 0);
      frame::write_header(to_.get(), {{"entry", e}});
    } else if (S_ISREG(st.st_mode)) {
      UniqueFd fd(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
      if (!fd) throw_sys("open " + path);
      e["type"] = "file";
      frame::write_header(to_.get(), {{"entry", e}});
      pump_fd(fd.get());
      frame::write_header(to_.get(), {{"end", true}});
    }
  }

  Engine::Impl& I_;
  BoxRecord box_;
  UniqueFd to_, from_;
};

}  // namespace

void Engine::Impl::trust_ca_in_box(const BoxRecord& b, const std::string& pem) {
  RemoteFiles f(*this, b);
  f.start("root");
  f.write("/usr/local/share/ca-certificates/upstream-egress.crt", pem, 0644, true);
  const std::string bundle = "/etc/ssl/certs/ca-certificates.crt";
  std::string have;
  try {
    have = f.read(bundle, 64ull << 20);
  } catch (const Error& e) {
    if (e.code() != Errc::not_found) throw;
  }
  if (have.find(pem) != std::string::npos) return;
  if (!have.empty() && have.back() != '\n') have += '\n';
  f.write(bundle, have + pem, 0644, true);
}

std::unique_ptr<FileSession> Engine::files(const std::string& ref, const std::string& user) {
  Impl& I = *impl_;
  std::lock_guard g(I.mu);
  BoxRecord box = I.wake(I.check_alive(I.store.resolve(ref)), "resumed for a file call");
  if (box.state == box_state::archived) {
    auto lock = I.lock_box(box.id);
    box = I.unarchive(*I.store.find_id(box.id), "unarchived for a file call");
  }
  I.store.touch(box.id, now_ms());
  std::string who = user.empty() ? box.spec.user : user;
  if (box.state == box_state::running) {
    auto session = std::make_unique<RemoteFiles>(I, box);
    session->start(who);
    return session;
  }
  if (box.state != box_state::stopped)
    throw Error(Errc::failed_precondition, "box " + box.name + " is " + box.state);
  // A stopped box is assembled just for this session, without becoming "running"; its lock is
  // held until the session ends, so nothing starts or removes it meanwhile.
  FileLock lock = I.lock_box(box.id);
  box = *I.store.find_id(box.id);
  if (box.state != box_state::stopped)
    throw Error(Errc::failed_precondition, "box " + box.name + " changed state");
  I.start_init(box, "", false);
  auto session = std::make_unique<RemoteFiles>(I, box);
  session->lock_.emplace(std::move(lock));
  session->maintenance_ = true;
  session->start(who);
  return session;
}

}  // namespace upstream
