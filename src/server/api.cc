#include "server/api.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <optional>
#include <set>
#include <thread>

#include "common/error.h"
#include "common/fd.h"
#include "common/strings.h"
#include "common/time.h"
#include "common/utf8.h"
#include "engine/wire.h"
#include "model/egress.h"
#include "server/json_body.h"

extern "C" const char upstream_openapi_start[];
extern "C" const char upstream_openapi_end[];

namespace upstream::server {

using nlohmann::json;

namespace {

int status_of(Errc c) {
  switch (c) {
    case Errc::invalid_argument:
      return 400;
    case Errc::not_found:
      return 404;
    case Errc::already_exists:
    case Errc::failed_precondition:
      return 409;
    case Errc::resource_exhausted:
      return 429;
    case Errc::permission_denied:
      return 403;
    case Errc::unavailable:
      return 503;
    case Errc::timeout:
      return 504;
    case Errc::internal:
      break;
  }
  return 500;
}

[[noreturn]] void not_found(const std::string& message) {
  throw ApiError(404, "not_found", message);
}

std::optional<std::string> qparam(const Request& r, const std::string& key) {
  auto it = r.query.find(key);
  if (it == r.query.end()) return std::nullopt;
  return it->second;
}

std::string need_param(const Request& r, const std::string& key) {
  auto v = qparam(r, key);
  if (!v || v->empty()) bad("query parameter '" + key + "' is required");
  return *v;
}

bool bool_param(const Request& r, const std::string& key, bool fallback) {
  auto v = qparam(r, key);
  if (!v) return fallback;
  if (*v == "true" || *v == "1" || v->empty()) return true;
  if (*v == "false" || *v == "0") return false;
  bad("query parameter '" + key + "' must be true or false, got '" + *v + "'");
}

uint64_t uint_param(const Request& r, const std::string& key, uint64_t fallback, uint64_t max) {
  auto v = qparam(r, key);
  if (!v) return fallback;
  if (v->empty() || v->size() > 12 || v->find_first_not_of("0123456789") != std::string::npos)
    bad("query parameter '" + key + "' must be a whole number, got '" + *v + "'");
  uint64_t n = std::stoull(*v);
  if (n > max) bad("query parameter '" + key + "' must be at most " + std::to_string(max));
  return n;
}

std::optional<uint32_t> mode_param(const Request& r) {
  auto v = qparam(r, "mode");
  if (!v) return std::nullopt;
  if (v->empty() || v->size() > 4 || v->find_first_not_of("01234567") != std::string::npos)
    bad("query parameter 'mode' must be octal permission bits such as 0644, got '" + *v + "'");
  return static_cast<uint32_t>(std::stoul(*v, nullptr, 8));
}

json file_json(const FileInfo& f, const std::string& path) {
  char mode[8];
  std::snprintf(mode, sizeof mode, "%04o", f.mode & 07777);
  json j = {
      {"name", f.name}, {"path", f.path.empty() ? path : f.path}, {"type", f.type}, {"mode", mode},
      {"size", f.size}, {"mtime", format_time(f.mtime_ms)},       {"uid", f.uid},   {"gid", f.gid}};
  if (f.type == "symlink") j["target"] = f.target;
  return j;
}

// Writes a whole buffer to a pipe or file, giving up after timeout_ms without progress.
bool write_with_timeout(int fd, std::string_view data, int timeout_ms) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n > 0) {
      data.remove_prefix(static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      pollfd p{fd, POLLOUT, 0};
      if (::poll(&p, 1, timeout_ms) <= 0) return false;
      continue;
    }
    return false;
  }
  return true;
}

}  // namespace

// Sends what a producer writes into a pipe as a chunked response. The producer runs on its own
// thread; an error it meets after the response began cuts the response short (the client sees
// an incomplete chunked body, never a complete-looking wrong one).
void stream_from_producer(Responder& res, const std::string& content_type,
                          const std::function<void(int fd)>& produce) {
  Pipe p = make_pipe(O_CLOEXEC);
  std::exception_ptr failure;
  int wfd = p.write.release();
  std::thread producer([&, wfd] {
    try {
      produce(wfd);
    } catch (...) {
      failure = std::current_exception();
    }
    ::close(wfd);
  });
  char buf[65536];
  bool client_ok = true, began = false;
  for (;;) {
    ssize_t n = ::read(p.read.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    if (!client_ok) continue;  // keep draining so the producer can finish
    if (!began) {
      res.begin(200, content_type);
      began = true;
    }
    client_ok = res.chunk(std::string_view(buf, static_cast<size_t>(n)));
  }
  producer.join();
  if (failure && !began) std::rethrow_exception(failure);
  if (!began) res.begin(200, content_type);
  if (failure || !client_ok) throw ApiError(0, "aborted", "the response was cut short");
  res.end();
}

void Api::Call::json_reply(int status, const json& j) {
  res.send(status, "application/json", dump(j));
}

// A foreground exec whose stdin is fed by later requests.
struct Api::LiveExec {
  std::mutex mu;
  UniqueFd stdin_write;  // our end of the pipe the exec's stdin is copied from
};

Api::Api(Engine& engine, store::Db& keys_db, ApiOptions opts)
    : engine_(engine), keys_(keys_db), opts_(std::move(opts)) {
  char buf[4096];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) throw_sys("readlink /proc/self/exe");
  self_exe_.assign(buf, static_cast<size_t>(n));
}

Api::~Api() = default;

bool Api::auth_required() {
  std::lock_guard g(keys_mu_);
  return keys_.any_active();
}

namespace {

bool is_upload(const std::string& method, const std::string& path) {
  return (method == "PUT" && (path.ends_with("/files") || path.ends_with("/files/archive"))) ||
         ((method == "PUT" || method == "POST") && path == "/v1/snapshots/import");
}

}  // namespace

bool Api::raw_body(const std::string& method, const std::string& path) const {
  return is_upload(method, path) || path.ends_with("/stdin");
}

uint64_t Api::body_limit(const std::string& method, const std::string& path) const {
  return is_upload(method, path) ? opts_.max_upload : opts_.max_body;
}

std::pair<int, std::string> Api::error_body(const std::exception& e) {
  int status = 500;
  std::string code = "internal";
  if (auto* a = dynamic_cast<const ApiError*>(&e)) {
    status = a->status;
    code = a->code;
  } else if (auto* u = dynamic_cast<const Error*>(&e)) {
    status = status_of(u->code());
    code = errc_name(u->code());
  }
  return {status, dump({{"code", code}, {"message", e.what()}})};
}

void Api::handle(Request& req, Responder& res) {
  Call c{req, res};
  try {
    dispatch(c);
  } catch (const std::exception& e) {
    auto [status, body] = error_body(e);
    if (status == 0) throw;  // the response was cut short: the connection must close
    try {
      metrics_.error(json::parse(body).value("code", "internal"));
    } catch (...) {
    }
    if (res.started()) throw ApiError(0, "aborted", e.what());
    std::vector<std::pair<std::string, std::string>> headers;
    if (status == 401) headers.push_back({"WWW-Authenticate", "Bearer realm=\"upstream\""});
    res.send(status, "application/json", body, headers);
  }
}

void Api::dispatch(Call& c) {
  Request& r = c.req;
  GuardedRequest g{r.method,
                   r.host,
                   r.origin,
                   r.content_type,
                   !r.body.empty() || r.body_fd >= 0,
                   raw_body(r.method, r.path),
                   r.remote == "unix"};
  if (auto no = guard_request(g, opts_.guard)) throw ApiError(no->status, no->code, no->message);
  auto seg = split(r.path, '/');
  if (!seg.empty() && seg.front().empty()) seg.erase(seg.begin());
  if (!seg.empty() && seg.back().empty()) seg.pop_back();

  if (r.path == "/healthz") {
    if (r.method != "GET") throw ApiError(405, "method_not_allowed", "use GET " + r.path);
    c.json_reply(200, {{"status", "ok"}, {"version", UPSTREAM_VERSION}});
    return;
  }
  if (r.path == "/v1/openapi.json") {
    if (r.method != "GET") throw ApiError(405, "method_not_allowed", "use GET " + r.path);
    c.res.send(200, "application/json",
               std::string(upstream_openapi_start,
                           static_cast<size_t>(upstream_openapi_end - upstream_openapi_start)));
    return;
  }

  // Everything else needs a key once any key exists.
  authenticate(c);

  if (r.path == "/metrics") {
    if (r.method != "GET") throw ApiError(405, "method_not_allowed", "use GET " + r.path);
    // Installation-wide counts are the operator's, not a tenant's.
    if (!c.tenant.empty())
      throw ApiError(403, "permission_denied",
                     "/metrics needs an operator key (upstream keys create --operator)");
    std::map<std::string, uint64_t> states;
    for (const auto& b : engine_.list_boxes()) states[b.state]++;
    c.res.send(200, "text/plain; version=0.0.4", metrics_.render(states, inflight.load()));
    return;
  }
  if (seg.size() >= 2 && seg[0] == "v1" && seg[1] == "boxes") {
    handle_boxes(c, seg);
    return;
  }
  if (seg.size() >= 2 && seg[0] == "v1" && (seg[1] == "snapshots" || seg[1] == "images")) {
    handle_snapshots(c, seg);
    return;
  }
  if (seg.size() >= 2 && seg[0] == "v1" && seg[1] == "pipelines") {
    handle_pipelines(c, seg);
    return;
  }
  if (seg.size() >= 2 && seg[0] == "v1" && seg[1] == "sessions") {
    handle_sessions(c, seg);
    return;
  }
  if (seg.size() == 2 && seg[0] == "v1" && seg[1] == "usage") {
    handle_usage(c);
    return;
  }
  if (seg.size() == 2 && seg[0] == "v1" && seg[1] == "info") {
    if (r.method != "GET") throw ApiError(405, "method_not_allowed", "use GET " + r.path);
    SystemInfo s = engine_.system_info();
    c.json_reply(200, {{"version", s.version},
                       {"storage", s.storage},
                       {"cgroups", s.cgroups},
                       {"proc_view", s.proc_view},
                       {"kernel", s.kernel},
                       {"tenant", c.tenant},
                       {"auth", c.authed}});
    return;
  }
  not_found("no route for " + r.method + " " + r.path);
}

// Everything but the health check and the OpenAPI document needs a key once any key exists.
void Api::authenticate(Call& c) {
  Request& r = c.req;
  if (!auth_required()) return;
  // The scheme is case-insensitive (RFC 9110).
  std::string token;
  if (r.authorization.size() > 7 && strncasecmp(r.authorization.c_str(), "bearer ", 7) == 0)
    token = trim(r.authorization.substr(7));
  if (token.empty())
    throw ApiError(401, "unauthenticated",
                   "an API key is required: send 'Authorization: Bearer <key>'");
  std::optional<ApiKey> key;
  {
    std::lock_guard g(keys_mu_);
    key = keys_.authenticate(token);
  }
  if (!key) throw ApiError(401, "unauthenticated", "the API key is not valid or was revoked");
  c.tenant = key->tenant;
  c.authed = true;
  r.key_id = key->id;
  r.key_tenant = key->tenant;
}

// GET /v1/usage: metered usage over a period; a tenant sees its own boxes and snapshots only.
void Api::handle_usage(Call& c) {
  Request& r = c.req;
  if (r.method != "GET") throw ApiError(405, "method_not_allowed", "use GET " + r.path);
  for (const auto& [k, v] : r.query)
    if (k != "since" && k != "until" && k != "by" && k != "label")
      bad("unknown query parameter '" + k + "' (known: since, until, by, label)");
  int64_t now = now_ms();
  Engine::UsageQuery q;
  q.since = parse_when(qparam(r, "since").value_or("30d"), now, "query parameter 'since'");
  q.until = parse_when(qparam(r, "until").value_or("now"), now, "query parameter 'until'");
  q.by = qparam(r, "by").value_or("tenant");
  for (auto [it, end] = r.query.equal_range("label"); it != end; ++it) {
    auto [k, v] = parse_label(it->second);
    q.labels[k] = v;
  }
  if (!c.tenant.empty()) q.labels[kTenantLabel] = c.tenant;
  c.json_reply(200, usage_report_json(engine_.usage_report(q)));
}

BoxRecord Api::tenant_box(Call& c, const std::string& ref) {
  BoxRecord b;
  try {
    b = engine_.get_box(ref);
  } catch (const Error& e) {
    if (e.code() == Errc::not_found || e.code() == Errc::invalid_argument)
      not_found("no such box: " + ref);
    throw;
  }
  if (!c.tenant.empty()) {
    auto it = b.spec.labels.find(kTenantLabel);
    if (it == b.spec.labels.end() || it->second != c.tenant) not_found("no such box: " + ref);
  }
  return b;
}

namespace {

// A request's "labels": labels starting with "upstream." are set by upstream only.
std::map<std::string, std::string> user_labels(Body& b) {
  std::map<std::string, std::string> out;
  for (auto& [k, v] : b.string_map("labels")) {
    if (starts_with(k, "upstream."))
      bad("label '" + k + "' is reserved: labels starting with 'upstream.' are set by upstream");
    parse_label(k + "=" + v);
    out[k] = v;
  }
  return out;
}

}  // namespace

BoxSpec Api::box_spec_from(Call& c, Body& b) {
  // The body is a box spec in its one encoding (model/box.h), with "count" beside it.
  BoxSpec spec = spec_from_json(b.json(), "", {"count"});
  for (const auto& [k, v] : spec.labels)
    if (starts_with(k, "upstream."))
      bad("label '" + k + "' is reserved: labels starting with 'upstream.' are set by upstream");
  // What a tenant may name as the image (its own snapshots, published images) is the engine's
  // rule, applied to every box made for the tenant label.
  if (!c.tenant.empty()) spec.labels[kTenantLabel] = c.tenant;
  return spec;
}

void Api::check_box_quota(Call& c, size_t adding) {
  if (c.tenant.empty()) return;
  Tenant t;
  {
    std::lock_guard g(keys_mu_);
    t = keys_.tenant(c.tenant);
  }
  auto max = t.limits.max_boxes ? t.limits.max_boxes : opts_.default_max_boxes;
  if (!max) return;
  store::BoxFilter f;
  f.labels[kTenantLabel] = c.tenant;
  if (engine_.list_boxes(f).size() + adding > *max)
    throw ApiError(
        429, "resource_exhausted",
        "tenant " + c.tenant + " has reached its limit of " + std::to_string(*max) + " boxes");
}

SnapshotRecord Api::tenant_snapshot(Call& c, const std::string& ref) {
  SnapshotRecord s;
  try {
    s = engine_.get_snapshot(ref);
  } catch (const Error& e) {
    if (e.code() == Errc::not_found || e.code() == Errc::invalid_argument)
      not_found("no such snapshot or image: " + ref);
    throw;
  }
  if (!c.tenant.empty()) {
    auto it = s.labels.find(kTenantLabel);
    if (it == s.labels.end() || it->second != c.tenant)
      not_found("no such snapshot or image: " + ref);
  }
  return s;
}

void Api::handle_snapshots(Call& c, const std::vector<std::string>& seg) {
  Request& r = c.req;
  const std::string& m = r.method;
  bool images = seg[1] == "images";
  if (seg.size() == 2) {
    if (m != "GET") throw ApiError(405, "method_not_allowed", "use GET " + r.path);
    for (const auto& [k, v] : r.query)
      if (k != "kind" || images)
        bad("unknown query parameter '" + k + "'" + (images ? "" : " (known: kind)"));
    std::string kind = images ? "image" : qparam(r, "kind").value_or("");
    if (!kind.empty() && kind != "snapshot" && kind != "image")
      bad("query parameter 'kind' must be snapshot or image");
    json out = json::array();
    for (const auto& s : engine_.list_snapshots(kind)) {
      if (!c.tenant.empty()) {
        auto it = s.labels.find(kTenantLabel);
        if (it == s.labels.end() || it->second != c.tenant) continue;
      }
      out.push_back(snapshot_json(s));
    }
    c.json_reply(200, {{images ? "images" : "snapshots", out}});
    return;
  }
  if (seg.size() == 3 && seg[2] == "import" && !images) {
    if (m != "PUT" && m != "POST") throw ApiError(405, "method_not_allowed", "use PUT " + r.path);
    for (const auto& [k, v] : r.query)
      if (k != "name" && k != "base")
        bad("unknown query parameter '" + k + "' (known: name, base)");
    if (r.body_fd < 0) bad("the request body must be a snapshot export (.tar.zst)");
    std::map<std::string, std::string> labels;
    if (!c.tenant.empty()) labels[kTenantLabel] = c.tenant;
    SnapshotRecord s = engine_.import_snapshot(r.body_fd, qparam(r, "name").value_or(""), labels,
                                               qparam(r, "base").value_or(""));
    c.json_reply(201, snapshot_json(s));
    return;
  }
  SnapshotRecord s = tenant_snapshot(c, seg[2]);
  if (images && s.kind != "image") not_found("no such image: " + seg[2]);
  if (seg.size() == 3) {
    if (m == "GET") {
      c.json_reply(200, snapshot_json(s));
      return;
    }
    if (m == "DELETE") {
      engine_.remove_snapshot(s.id);
      c.json_reply(200, {{"id", s.id}, {"removed", true}});
      return;
    }
    throw ApiError(405, "method_not_allowed", "use GET or DELETE " + r.path);
  }
  if (seg.size() == 4 && seg[3] == "export") {
    if (m != "GET") throw ApiError(405, "method_not_allowed", "use GET " + r.path);
    stream_from_producer(c.res, "application/zstd",
                         [&](int w) { engine_.export_snapshot(s.id, w); });
    return;
  }
  not_found("no route for " + m + " " + r.path);
}

void Api::handle_boxes(Call& c, const std::vector<std::string>& seg) {
  if (seg.size() == 2) return handle_box_collection(c);
  BoxRecord box = tenant_box(c, seg[2]);
  handle_box(c, box, seg);
}

// /v1/boxes: create (one or several) and list.
void Api::handle_box_collection(Call& c) {
  Request& r = c.req;
  const std::string& m = r.method;
  if (m == "POST") {
    Body b(r.body, {"name", "image", "labels", "env", "limits", "user", "workdir", "network",
                    "egress", "count", "policy"});
    BoxSpec spec = box_spec_from(c, b);
    auto count = b.uint("count");
    if (count && (*count < 1 || *count > 1000)) bad("count must be between 1 and 1000");
    check_box_quota(c, count.value_or(1));
    validate_box_spec(spec);
    if (count) {
      json boxes = json::array();
      for (const auto& box : engine_.create_boxes(spec, *count)) boxes.push_back(box_json(box));
      c.json_reply(201, {{"boxes", boxes}});
      return;
    }
    BoxRecord box = engine_.create_box(spec);
    c.json_reply(201, box_json(box));
    return;
  }
  if (m == "GET") {
    store::BoxFilter f;
    for (auto [it, end] = r.query.equal_range("label"); it != end; ++it) {
      auto [k, v] = parse_label(it->second);
      f.labels[k] = v;
    }
    for (const auto& [k, v] : r.query)
      if (k != "label" && k != "state" && k != "limit" && k != "after")
        bad("unknown query parameter '" + k + "' (known: label, state, limit, after)");
    if (!c.tenant.empty()) f.labels[kTenantLabel] = c.tenant;
    if (auto s = qparam(r, "state")) f.state = *s;
    f.limit = uint_param(r, "limit", 100, 1000);
    if (f.limit == 0) bad("query parameter 'limit' must be at least 1");
    if (auto a = qparam(r, "after")) f.after_id = *a;
    json boxes = json::array();
    auto list = engine_.list_boxes(f);
    for (const auto& b : list) boxes.push_back(box_json(b));
    json next = list.size() == f.limit ? json(list.back().id) : json(nullptr);
    c.json_reply(200, {{"boxes", boxes}, {"next", next}});
    return;
  }
  throw ApiError(405, "method_not_allowed", "use GET or POST " + r.path);
}

// /v1/boxes/{box} and what is below it.
void Api::handle_box(Call& c, const BoxRecord& box, const std::vector<std::string>& seg) {
  Request& r = c.req;
  const std::string& m = r.method;
  if (seg.size() == 3) {
    if (m == "GET") {
      BoxUsage u = engine_.usage(box.id);
      auto ev = engine_.events(box.id);
      c.json_reply(200, box_json(box, &u, &ev));
      return;
    }
    if (m == "DELETE") {
      for (const auto& [k, v] : r.query)
        if (k != "force") bad("unknown query parameter '" + k + "' (known: force)");
      engine_.remove_box(box.id, bool_param(r, "force", false));
      c.json_reply(200, {{"id", box.id}, {"removed", true}});
      return;
    }
    throw ApiError(405, "method_not_allowed", "use GET or DELETE " + r.path);
  }
  const std::string& what = seg[3];
  if (seg.size() == 4 && what == "snapshot") {
    if (m != "POST") throw ApiError(405, "method_not_allowed", "use POST " + r.path);
    Body b(r.body, {"name", "labels", "kind"});
    SnapshotOptions o;
    if (auto v = b.str("name")) o.name = *v;
    if (auto v = b.str("kind")) {
      if (*v != "snapshot" && *v != "image") bad("field 'kind' must be snapshot or image");
      o.kind = *v;
    }
    o.labels = user_labels(b);
    if (!c.tenant.empty()) o.labels[kTenantLabel] = c.tenant;
    c.json_reply(201, snapshot_json(engine_.snapshot_box(box.id, o)));
    return;
  }
  if (seg.size() == 4 && what == "fork") {
    if (m != "POST") throw ApiError(405, "method_not_allowed", "use POST " + r.path);
    Body b(r.body, {"count", "name", "labels", "env", "limits", "user", "workdir"});
    auto count = b.uint("count").value_or(1);
    if (count < 1 || count > 1000) bad("count must be between 1 and 1000");
    BoxSpec spec = box_spec_from(c, b);
    check_box_quota(c, count);
    validate_box_spec(spec);
    json boxes = json::array();
    for (const auto& x : engine_.fork_box(box.id, count, spec)) boxes.push_back(box_json(x));
    c.json_reply(201, {{"boxes", boxes}});
    return;
  }
  if (seg.size() == 4 && what == "network") {
    if (m != "POST") throw ApiError(405, "method_not_allowed", "use POST " + r.path);
    Body b(r.body, {"mode", "allow_domains", "allow_cidrs", "deny_cidrs", "headers"});
    auto mode = b.str("mode");
    if (!mode) bad("field 'mode' is required (none, allow-all or custom)");
    json e = json::parse(r.body);
    e.erase("mode");
    bool keep_headers = !e.contains("headers");
    c.json_reply(200, box_json(engine_.set_network(box.id, parse_network_mode(*mode),
                                                   egress::from_json(e), keep_headers)));
    return;
  }
  if ((seg.size() == 4 || seg.size() == 5) && what == "expose")
    return handle_box_expose(c, box, seg);
  if (seg.size() == 4 && what == "traffic") {
    if (m != "GET") throw ApiError(405, "method_not_allowed", "use GET " + r.path);
    c.json_reply(200, engine_.net_stats(box.id));
    return;
  }
  if (seg.size() == 4 && (what == "stop" || what == "start" || what == "pause" ||
                          what == "resume" || what == "archive"))
    return handle_box_lifecycle(c, box, what);
  if (what == "execs") {
    if (seg.size() == 4 && m == "POST") {
      handle_exec_create(c, box);
      return;
    }
    handle_execs(c, box, seg);
    return;
  }
  if (what == "files") {
    handle_files(c, box, seg);
    return;
  }
  if (seg.size() == 4 && what == "processes") {
    if (m != "GET") throw ApiError(405, "method_not_allowed", "use GET " + r.path);
    json list = json::array();
    for (const auto& p : engine_.exec_processes(box.id))
      list.push_back({{"exec", p.seq}, {"running", p.running}, {"processes", p.processes}});
    c.json_reply(200, {{"execs", list}});
    return;
  }
  not_found("no route for " + m + " " + r.path);
}

// /v1/boxes/{box}/expose[/{id}]: expose a port, list, revoke.
void Api::handle_box_expose(Call& c, const BoxRecord& box, const std::vector<std::string>& seg) {
  Request& r = c.req;
  const std::string& m = r.method;
  if (seg.size() == 4 && m == "POST") {
    Body b(r.body, {"port", "auth"});
    auto port = b.uint("port");
    if (!port) bad("field 'port' is required (1 to 65535)");
    std::string auth = b.str("auth").value_or("bearer");
    c.json_reply(201, exposure_json(engine_.expose(
                          box.id, static_cast<int>(std::min<uint64_t>(*port, 70000)), auth)));
    return;
  }
  if (seg.size() == 4 && m == "GET") {
    json arr = json::array();
    for (const auto& e : engine_.exposures(box.id)) arr.push_back(exposure_json(e));
    c.json_reply(200, {{"exposures", arr}});
    return;
  }
  if (seg.size() == 5 && m == "DELETE") {
    engine_.unexpose(box.id, seg[4]);
    c.json_reply(200, {{"removed", seg[4]}});
    return;
  }
  throw ApiError(405, "method_not_allowed",
                 "use POST or GET /v1/boxes/{box}/expose, DELETE /v1/boxes/{box}/expose/{id}");
}

// /v1/boxes/{box}/{stop,start,pause,resume,archive}.
void Api::handle_box_lifecycle(Call& c, const BoxRecord& box, const std::string& what) {
  Request& r = c.req;
  const std::string& m = r.method;
  if (m != "POST") throw ApiError(405, "method_not_allowed", "use POST " + r.path);
  if (what == "pause" || what == "resume" || what == "archive") {
    Body b(r.body, {});
    c.json_reply(200, box_json(what == "pause"    ? engine_.pause_box(box.id)
                               : what == "resume" ? engine_.resume_box(box.id)
                                                  : engine_.archive_box(box.id)));
  } else if (what == "stop") {
    Body b(r.body, {"grace_ms"});
    auto grace = b.uint("grace_ms").value_or(10000);
    if (grace > 3600000) bad("grace_ms must be at most 3600000");
    c.json_reply(200, box_json(engine_.stop_box(box.id, static_cast<int64_t>(grace))));
  } else {
    Body b(r.body, {});
    c.json_reply(200, box_json(engine_.start_box(box.id)));
  }
}

ExecRequest parse_exec_request(const std::string& body, const std::string& accept) {
  Body b(body, {"cmd", "shell", "env", "cwd", "user", "timeout_ms", "background", "stdin",
                "stdin_stream", "stream"});
  ExecRequest q;
  ExecSpec& spec = q.spec;
  spec.argv = b.string_list("cmd");
  if (auto s = b.str("shell")) spec.shell = *s;
  if (spec.argv.empty() == spec.shell.empty())
    bad("give exactly one of 'cmd' (an array: the command and its arguments) or 'shell' (a "
        "command line)");
  for (auto& [k, v] : b.string_map("env")) {
    if (!valid_env_name(k)) bad("env: '" + k + "' is not a valid variable name");
    spec.env.push_back(k + "=" + v);
  }
  if (auto v = b.str("cwd")) spec.cwd = *v;
  if (auto v = b.str("user")) spec.user = *v;
  if (auto v = b.uint("timeout_ms")) spec.timeout_ms = *v;
  spec.background = b.boolean("background").value_or(false);
  q.stdin_data = b.str("stdin");
  q.stdin_stream = b.boolean("stdin_stream").value_or(false);
  q.sse = accept.find("text/event-stream") != std::string::npos;
  q.stream = b.boolean("stream").value_or(false) || q.sse ||
             accept.find("application/x-ndjson") != std::string::npos;
  if (spec.background && (q.stdin_data || q.stdin_stream || q.stream))
    bad("a background exec takes no stdin and is not streamed; read its output from "
        "/execs/{exec}/logs");
  if (q.stdin_stream && !q.stream) bad("'stdin_stream' needs a streamed exec ('stream': true)");
  if (q.stdin_data && q.stdin_stream)
    bad("give either 'stdin' (the data) or 'stdin_stream', not both");
  spec.stdin = q.stdin_data.has_value() || q.stdin_stream;
  validate_exec_spec(spec);
  return q;
}

std::shared_ptr<void> Api::hold_exec_slot(const std::string& tenant) {
  uint64_t max_execs = 0;
  if (!tenant.empty()) {
    Tenant t;
    {
      std::lock_guard g(keys_mu_);
      t = keys_.tenant(tenant);
    }
    auto mx = t.limits.max_execs ? t.limits.max_execs : opts_.default_max_execs;
    max_execs = mx.value_or(0);
  }
  {
    std::lock_guard g(execs_mu_);
    auto& n = tenant_execs_[tenant];
    if (max_execs && n >= max_execs)
      throw ApiError(
          429, "resource_exhausted",
          "tenant " + tenant + " already runs " + std::to_string(n) + " execs, its limit");
    n++;
  }
  return std::shared_ptr<void>(nullptr, [this, tenant](void*) {
    std::lock_guard g(execs_mu_);
    tenant_execs_[tenant]--;
  });
}

void Api::handle_exec_create(Call& c, const BoxRecord& box) {
  ExecRequest q = parse_exec_request(c.req.body, c.req.accept);
  const ExecSpec& spec = q.spec;
  std::shared_ptr<void> slot = hold_exec_slot(c.tenant);

  int64_t t0 = mono_us();
  std::unique_ptr<ExecSession> s;
  try {
    s = engine_.start_exec(box.id, spec);
  } catch (...) {
    metrics_.exec_started(false);
    throw;
  }
  metrics_.exec_started(true);
  // It could not start (no such program, a bad user...): the reason is its stderr.
  std::string early_err;
  if (s->finished()) early_err = s->wait({}).stderr_tail;

  if (spec.background) {
    auto rec = engine_.get_exec(box.id, s->seq());
    json j = rec ? exec_json(*rec) : json{{"box_id", box.id}, {"exec", s->seq()}};
    c.json_reply(202, j);
    return;
  }

  // Stdin: inline data through a pipe we fill from a thread, or a pipe later requests fill.
  UniqueFd stdin_read;
  std::shared_ptr<LiveExec> live;
  std::thread feeder;
  if (spec.stdin) {
    Pipe p = make_pipe(O_CLOEXEC);
    stdin_read = std::move(p.read);
    if (q.stdin_data) {
      int wfd = p.write.release();
      feeder = std::thread([wfd, data = std::move(*q.stdin_data)] {
        (void)write_with_timeout(wfd, data, 3600 * 1000);
        ::close(wfd);
      });
    } else {
      live = std::make_shared<LiveExec>();
      live->stdin_write = std::move(p.write);
      set_nonblocking(live->stdin_write.get(), true);
      std::lock_guard g(execs_mu_);
      live_[{box.id, s->seq()}] = live;
    }
  }
  struct Unregister {
    Api* api;
    std::shared_ptr<LiveExec> live;
    std::pair<std::string, uint64_t> key;
    std::thread* feeder;
    ~Unregister() {
      if (live) {
        std::lock_guard g(api->execs_mu_);
        api->live_.erase(key);
        std::lock_guard g2(live->mu);
        live->stdin_write.reset();
      }
      if (feeder->joinable()) feeder->join();
    }
  } unregister{this, live, {box.id, s->seq()}, &feeder};

  int stdin_fd = stdin_read ? stdin_read.get() : -1;
  if (q.stream)
    reply_exec_streamed(c, *s, q.sse, stdin_fd, early_err, t0);
  else
    reply_exec_waited(c, *s, stdin_fd, early_err, t0);
}

void Api::reply_exec_waited(Call& c, ExecSession& s, int stdin_fd, const std::string& early_err,
                            int64_t t0) {
  std::string out, err = early_err;
  bool out_cut = false, err_cut = false;
  size_t cap = opts_.max_output;
  auto sink = [&](Stream st, std::string_view d) {
    std::string& dst = st == Stream::stdout_ ? out : err;
    bool& cut = st == Stream::stdout_ ? out_cut : err_cut;
    if (dst.size() + d.size() > cap) {
      dst.append(d.substr(0, cap - dst.size()));
      cut = true;
    } else {
      dst.append(d);
    }
  };
  ExecRecord rec = s.wait(sink, stdin_fd);
  metrics_.exec_done(static_cast<double>(mono_us() - t0) / 1e6);
  json j = exec_json(rec);
  j["stdout"] = out;
  j["stderr"] = err;
  j["stdout_truncated"] = out_cut;
  j["stderr_truncated"] = err_cut;
  c.json_reply(200, j);
}

// Streamed: one event per piece of output, flushed as it comes.
void Api::reply_exec_streamed(Call& c, ExecSession& s, bool sse, int stdin_fd,
                              const std::string& early_err, int64_t t0) {
  Request& r = c.req;
  const char* ctype = sse ? "text/event-stream" : "application/x-ndjson";
  bool client_gone = false;
  auto emit = [&](const std::string& type, const json& j) {
    if (client_gone) return;
    std::string line = dump(j);
    bool ok =
        sse ? c.res.chunk("event: " + type + "\ndata: " + line + "\n\n") : c.res.chunk(line + "\n");
    if (!ok) {
      client_gone = true;
      s.signal(SIGKILL);
    }
  };
  c.res.begin(200, ctype);
  emit("start", {{"type", "start"}, {"box_id", s.box_id()}, {"exec", s.seq()}, {"pid", s.pid()}});
  // Output is text (UTF-8, never split inside a character) or, when it is not, base64 bytes.
  auto output = [&](const char* type, const std::string& bytes) {
    if (bytes.empty()) return;
    if (valid_utf8(bytes))
      emit(type, {{"type", type}, {"data", bytes}});
    else
      emit(type, {{"type", type}, {"data_b64", base64_encode(bytes)}});
  };
  output("stderr", early_err);
  Utf8Joiner jo, je;
  auto sink = [&](Stream st, std::string_view d) {
    bool o = st == Stream::stdout_;
    output(o ? "stdout" : "stderr", (o ? jo : je).take(d));
  };
  // The client's socket becomes readable when it hangs up: the exec is then killed.
  auto on_event = [&] {
    char b;
    ssize_t n = ::recv(r.socket_fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
      if (!client_gone) s.signal(SIGKILL);
      client_gone = true;
      ::usleep(2000);
    } else {
      ::usleep(20000);  // the client sent more (a pipelined request): look again later
    }
  };
  ExecRecord rec = s.wait(sink, stdin_fd, r.socket_fd, on_event);
  metrics_.exec_done(static_cast<double>(mono_us() - t0) / 1e6);
  output("stdout", jo.rest());
  output("stderr", je.rest());
  json ex = exec_json(rec);
  ex["type"] = "exit";
  emit("exit", ex);
  if (client_gone) throw ApiError(0, "aborted", "the client went away");
  c.res.end();
}

void Api::handle_execs(Call& c, const BoxRecord& box, const std::vector<std::string>& seg) {
  Request& r = c.req;
  const std::string& m = r.method;
  if (seg.size() == 4) {
    if (m != "GET") throw ApiError(405, "method_not_allowed", "use GET or POST " + r.path);
    bool running = bool_param(r, "running", false);
    size_t limit = uint_param(r, "limit", 50, 10000);
    json list = json::array();
    for (const auto& e : engine_.list_execs(box.id, running, limit)) list.push_back(exec_json(e));
    c.json_reply(200, {{"execs", list}});
    return;
  }
  const std::string& ss = seg[4];
  if (ss.empty() || ss.size() > 18 || ss.find_first_not_of("0123456789") != std::string::npos)
    bad("exec number must be a whole number, got '" + ss + "'");
  uint64_t seq = std::stoull(ss);
  auto rec = engine_.get_exec(box.id, seq);
  if (!rec) not_found("box " + box.name + " has no exec " + ss);
  if (seg.size() == 5) {
    if (m != "GET") throw ApiError(405, "method_not_allowed", "use GET " + r.path);
    json j = exec_json(*rec);
    j["stdout_tail"] = rec->stdout_tail;
    j["stderr_tail"] = rec->stderr_tail;
    c.json_reply(200, j);
    return;
  }
  const std::string& op = seg[5];
  if (seg.size() == 6 && op == "logs") {
    if (m != "GET") throw ApiError(405, "method_not_allowed", "use GET " + r.path);
    std::string which = qparam(r, "stream").value_or("stdout");
    if (which != "stdout" && which != "stderr")
      bad("query parameter 'stream' must be stdout or stderr, got '" + which + "'");
    uint64_t offset = uint_param(r, "offset", 0, 1ull << 50);
    auto [out, err] = engine_.exec_log_paths(box.id, seq);
    UniqueFd fd(::open((which == "stdout" ? out : err).c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) {
      // Nothing written (or its log made room for newer ones): the tail kept in the database.
      const std::string& tail = which == "stdout" ? rec->stdout_tail : rec->stderr_tail;
      c.res.send(200, "application/octet-stream",
                 offset >= tail.size() ? std::string() : tail.substr(offset));
      return;
    }
    if (offset && ::lseek(fd.get(), static_cast<off_t>(offset), SEEK_SET) < 0)
      throw_sys("seek in the exec's log");
    int raw = fd.get();
    stream_from_producer(c.res, "application/octet-stream", [raw](int w) {
      char buf[65536];
      for (;;) {
        ssize_t n = ::read(raw, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) throw_sys("read the exec's log");
        if (n == 0) return;
        write_all(w, buf, static_cast<size_t>(n));
      }
    });
    return;
  }
  if (seg.size() == 6 && op == "kill") {
    if (m != "POST") throw ApiError(405, "method_not_allowed", "use POST " + r.path);
    Body b(r.body, {"signal"});
    int sig = SIGKILL;
    if (const json* v = b.get("signal")) {
      if (v->is_number_unsigned())
        sig = parse_signal(std::to_string(v->get<uint64_t>()));
      else if (v->is_string())
        sig = parse_signal(v->get<std::string>());
      else
        bad("field 'signal' must be a signal name such as \"TERM\" or a number");
    }
    engine_.kill_exec(box.id, seq, sig);
    c.json_reply(200, {{"box_id", box.id}, {"exec", seq}, {"signal", sig}});
    return;
  }
  if (seg.size() == 6 && op == "stdin") {
    if (m != "POST") throw ApiError(405, "method_not_allowed", "use POST " + r.path);
    std::shared_ptr<LiveExec> live;
    {
      std::lock_guard g(execs_mu_);
      auto it = live_.find({box.id, seq});
      if (it != live_.end()) live = it->second;
    }
    if (!live)
      throw ApiError(409, "failed_precondition",
                     "exec " + ss +
                         " does not take stdin now (it was not started with "
                         "'stdin_stream', or it ended)");
    bool eof = bool_param(r, "eof", false);
    std::lock_guard g(live->mu);
    if (!live->stdin_write)
      throw ApiError(409, "failed_precondition", "exec " + ss + "'s stdin is closed");
    if (!r.body.empty() && !write_with_timeout(live->stdin_write.get(), r.body, 30000))
      throw ApiError(409, "failed_precondition",
                     "exec " + ss + " is not reading its stdin (or it ended)");
    if (eof) live->stdin_write.reset();
    c.json_reply(200,
                 {{"box_id", box.id}, {"exec", seq}, {"written", r.body.size()}, {"eof", eof}});
    return;
  }
  not_found("no route for " + m + " " + r.path);
}

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
