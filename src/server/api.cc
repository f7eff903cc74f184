#include "server/api.h"

#include <fcntl.h>
#include <unistd.h>

#include <optional>
#include <thread>

#include "common/error.h"
#include "common/fd.h"
#include "common/strings.h"
#include "common/time.h"
#include "engine/wire.h"
#include "server/json_body.h"
#include "server/params.h"

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

}  // namespace upstream::server
