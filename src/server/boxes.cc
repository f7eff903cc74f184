// /v1/boxes: create, list, inspect, change, expose and remove boxes, and their lifecycle.
#include "server/api.h"

#include "common/error.h"
#include "common/strings.h"
#include "engine/wire.h"
#include "model/egress.h"
#include "server/json_body.h"
#include "server/params.h"

namespace upstream::server {

using nlohmann::json;

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

}  // namespace upstream::server
