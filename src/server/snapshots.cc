// /v1/snapshots: list, inspect, remove, export and import snapshots.
#include "server/api.h"

#include "common/error.h"
#include "common/strings.h"
#include "engine/wire.h"
#include "server/json_body.h"
#include "server/params.h"

namespace upstream::server {

using nlohmann::json;

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

}  // namespace upstream::server
