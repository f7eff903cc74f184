// /v1/boxes/{box}/files: list, stat, read, write, move and remove files; tar archives in and out.
#include "server/api.h"

#include <sys/mman.h>
#include <unistd.h>

#include "common/error.h"
#include "common/fd.h"
#include "common/strings.h"
#include "common/time.h"
#include "engine/wire.h"
#include "server/json_body.h"
#include "server/params.h"

namespace upstream::server {

using nlohmann::json;

namespace {

json file_json(const FileInfo& f, const std::string& path) {
  char mode[8];
  std::snprintf(mode, sizeof mode, "%04o", f.mode & 07777);
  json j = {
      {"name", f.name}, {"path", f.path.empty() ? path : f.path}, {"type", f.type}, {"mode", mode},
      {"size", f.size}, {"mtime", format_time(f.mtime_ms)},       {"uid", f.uid},   {"gid", f.gid}};
  if (f.type == "symlink") j["target"] = f.target;
  return j;
}

}  // namespace

void Api::handle_files(Call& c, const BoxRecord& box, const std::vector<std::string>& seg) {
  Request& r = c.req;
  const std::string& m = r.method;
  std::string op = seg.size() >= 5 ? seg[4] : "";
  if (seg.size() > 5) not_found("no route for " + m + " " + r.path);
  auto fs = [&] { return engine_.files(box.id, qparam(r, "user").value_or("")); };
  auto abs = [&](const std::string& p) { return box_path(p, box.spec.workdir); };

  if (op.empty()) return handle_file(c, box);
  if (op == "list" || op == "stat") {
    if (m != "GET") throw ApiError(405, "method_not_allowed", "use GET " + r.path);
    std::string path = abs(need_param(r, "path"));
    auto f = fs();
    if (op == "stat") {
      c.json_reply(200, file_json(f->stat(path, bool_param(r, "follow", false)), abs(path)));
      return;
    }
    json entries = json::array();
    for (const auto& e : f->list(path))
      entries.push_back(file_json(e, box_path(e.name, abs(path))));
    c.json_reply(200, {{"path", abs(path)}, {"entries", entries}});
    return;
  }
  if (op == "mkdir") {
    if (m != "POST") throw ApiError(405, "method_not_allowed", "use POST " + r.path);
    Body b(r.body, {"path", "parents", "mode"});
    auto path = b.str("path");
    if (!path || path->empty()) bad("field 'path' is required");
    *path = abs(*path);
    uint32_t mode = 0755;
    if (auto v = b.str("mode")) {
      if (v->empty() || v->size() > 4 || v->find_first_not_of("01234567") != std::string::npos)
        bad("field 'mode' must be octal permission bits such as \"0755\"");
      mode = static_cast<uint32_t>(std::stoul(*v, nullptr, 8));
    }
    auto f = fs();
    f->mkdir(*path, b.boolean("parents").value_or(true), mode);
    c.json_reply(200, file_json(f->stat(*path), abs(*path)));
    return;
  }
  if (op == "move") {
    if (m != "POST") throw ApiError(405, "method_not_allowed", "use POST " + r.path);
    Body b(r.body, {"from", "to", "overwrite"});
    auto from = b.str("from"), to = b.str("to");
    if (!from || from->empty()) bad("field 'from' is required");
    if (!to || to->empty()) bad("field 'to' is required");
    *from = abs(*from);
    *to = abs(*to);
    auto f = fs();
    f->move(*from, *to, b.boolean("overwrite").value_or(true));
    c.json_reply(200, file_json(f->stat(*to), abs(*to)));
    return;
  }
  if (op == "archive") {
    std::string path = abs(need_param(r, "path"));
    if (m == "GET") {
      auto f = fs();
      (void)f->stat(path);  // a missing path is a 404 before anything is sent
      stream_from_producer(c.res, "application/x-tar", [&](int w) { f->download_tar(path, w); });
      return;
    }
    if (m == "PUT") {
      if (r.body_fd < 0) bad("the request body must be a tar archive");
      auto f = fs();
      uint64_t n = f->upload_tar(path, r.body_fd);
      c.json_reply(200, {{"path", path}, {"bytes", n}});
      return;
    }
    throw ApiError(405, "method_not_allowed", "use GET or PUT " + r.path);
  }
  not_found("no route for " + m + " " + r.path);
}

// /v1/boxes/{box}/files?path=: download, upload (the body, spooled by the server), remove.
void Api::handle_file(Call& c, const BoxRecord& box) {
  Request& r = c.req;
  const std::string& m = r.method;
  auto fs = [&] { return engine_.files(box.id, qparam(r, "user").value_or("")); };
  auto abs = [&](const std::string& p) { return box_path(p, box.spec.workdir); };
  if (m == "GET") {
    std::string path = abs(need_param(r, "path"));
    auto f = fs();
    FileInfo info = f->stat(path, true);
    if (info.type == "dir")
      bad(path + " is a directory; download directories as tar from /files/archive");
    if (info.type != "file") bad(path + " is not a regular file (it is a " + info.type + ")");
    stream_from_producer(c.res, "application/octet-stream", [&](int w) { f->read_to_fd(path, w); });
    return;
  }
  if (m == "PUT") {
    std::string path = abs(need_param(r, "path"));
    auto f = fs();
    UniqueFd mem;
    int src = r.body_fd;
    if (src < 0) {
      // A body that was not spooled (the server spools uploads): copy it to a memory file.
      mem = UniqueFd(::memfd_create("upload", MFD_CLOEXEC));
      if (!mem) throw_sys("memfd_create");
      write_all(mem.get(), r.body);
      ::lseek(mem.get(), 0, SEEK_SET);
      src = mem.get();
    }
    uint64_t n = f->write_from_fd(path, src, mode_param(r), bool_param(r, "mkdirs", false));
    json j = file_json(f->stat(path), abs(path));
    j["written"] = n;
    c.json_reply(200, j);
    return;
  }
  if (m == "DELETE") {
    std::string path = abs(need_param(r, "path"));
    fs()->remove(path, bool_param(r, "recursive", false));
    c.json_reply(200, {{"path", path}, {"removed", true}});
    return;
  }
  throw ApiError(405, "method_not_allowed", "use GET, PUT or DELETE " + r.path);
}

}  // namespace upstream::server
