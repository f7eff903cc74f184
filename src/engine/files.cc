// File sessions: operations are carried out by a worker inside the box (see init/fileworker),
// so every path is resolved by the kernel inside the box root. What this side adds is the host
// end of copies, where entries coming from a box are treated as untrusted.
#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

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

  std::optional<storage::FileLock> lock_;
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
    archive* a = archive_write_new();
    archive_write_set_format_pax_restricted(a);
    // Names are bytes in Linux: store them as they are, whatever the locale.
    archive_write_set_options(a, "hdrcharset=BINARY");
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
        if (archive_write_header(a, ent) != ARCHIVE_OK) {
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
    archive* a = archive_read_new();
    archive_read_support_filter_all(a);
    archive_read_support_format_tar(a);
    archive_read_support_format_gnutar(a);
    if (archive_read_open_fd(a, in_fd, 1 << 16) != ARCHIVE_OK) {
      std::string e = archive_error_string(a);
      archive_read_free(a);
      throw_invalid("not a tar archive: " + e);
    }
    // Entries are checked before anything is sent, so a bad archive changes nothing in the box.
    struct Pending {
      json entry;
      std::string data;
    };
    std::vector<Pending> entries;
    std::string error;
    uint64_t total = 0;
    archive_entry* e;
    for (;;) {
      int r = archive_read_next_header(a, &e);
      if (r == ARCHIVE_EOF) break;
      if (r < ARCHIVE_WARN) {
        error = std::string("bad tar archive: ") + archive_error_string(a);
        break;
      }
      std::string name = archive_entry_pathname(e) ? archive_entry_pathname(e) : "";
      while (starts_with(name, "./")) name = name.substr(2);
      while (!name.empty() && name.back() == '/') name.pop_back();
      if (name.empty() || name == ".") continue;
      if (!plain_relative(name)) {
        error = "tar entry '" + name + "' is not a plain relative path";
        break;
      }
      json j = {{"path", name},
                {"mode", archive_entry_perm(e)},
                {"mtime_ms", archive_entry_mtime(e) * 1000}};
      mode_t t = archive_entry_filetype(e);
      Pending p;
      if (archive_entry_hardlink(e)) {
        std::string target = archive_entry_hardlink(e);
        while (starts_with(target, "./")) target = target.substr(2);
        if (!plain_relative(target)) {
          error = "tar hard link '" + name + "' points outside the archive";
          break;
        }
        j["type"] = "hardlink";
        j["target"] = target;
      } else if (t == AE_IFREG) {
        j["type"] = "file";
        const void* buf;
        size_t size;
        la_int64_t off;
        while ((r = archive_read_data_block(a, &buf, &size, &off)) == ARCHIVE_OK) {
          if (static_cast<size_t>(off) > p.data.size())
            p.data.resize(static_cast<size_t>(off), '\0');
          p.data.append(static_cast<const char*>(buf), size);
          total += size;
          if (total > (4ull << 30)) {
            error = "tar archive is larger than 4 GiB";
            break;
          }
        }
        if (error.empty() && r != ARCHIVE_EOF)
          error = std::string("bad tar archive: ") + archive_error_string(a);
        if (!error.empty()) break;
      } else if (t == AE_IFDIR) {
        j["type"] = "dir";
      } else if (t == AE_IFLNK) {
        j["type"] = "symlink";
        j["target"] = archive_entry_symlink(e) ? archive_entry_symlink(e) : "";
      } else {
        continue;  // devices, fifos and sockets are not carried into boxes
      }
      p.entry = j;
      entries.push_back(std::move(p));
    }
    archive_read_free(a);
    if (!error.empty()) throw_invalid(error);
    send({{"op", "put"}, {"path", dir}});
    for (const auto& p : entries) {
      frame::write_header(to_.get(), {{"entry", p.entry}});
      if (p.entry["type"] == "file") {
        for (size_t off = 0; off < p.data.size(); off += kChunk)
          send_data(std::string_view(p.data).substr(off, kChunk));
        frame::write_header(to_.get(), {{"end", true}});
      }
    }
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
  storage::FileLock lock = I.lock_box(box.id);
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
