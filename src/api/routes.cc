#include "api/routes.h"

#include "common/error.h"
#include "common/strings.h"
#include "common/url.h"

namespace upstream::api {

const std::vector<Route>& routes() {
  static const std::vector<Route> table = [] {
    std::vector<Route> t;
    auto add = [&](std::initializer_list<const char*> methods, const char* path) {
      for (const char* m : methods) t.push_back({m, path});
    };
    add({"GET"}, "/healthz");
    add({"GET"}, "/metrics");
    add({"GET"}, "/v1/openapi.json");
    add({"GET"}, "/v1/usage");
    add({"GET"}, "/v1/info");
    add({"POST", "GET"}, "/v1/boxes");
    add({"GET", "DELETE"}, "/v1/boxes/{box}");
    add({"POST"}, "/v1/boxes/{box}/snapshot");
    add({"POST"}, "/v1/boxes/{box}/fork");
    add({"POST"}, "/v1/boxes/{box}/network");
    add({"GET"}, "/v1/boxes/{box}/traffic");
    add({"POST", "GET"}, "/v1/boxes/{box}/expose");
    add({"DELETE"}, "/v1/boxes/{box}/expose/{exposure}");
    for (const char* verb : {"pause", "archive", "resume", "stop", "start"})
      t.push_back({"POST", std::string("/v1/boxes/{box}/") + verb});
    add({"POST", "GET"}, "/v1/boxes/{box}/execs");
    add({"GET"}, "/v1/boxes/{box}/processes");
    add({"GET"}, "/v1/boxes/{box}/execs/{exec}");
    add({"GET"}, "/v1/boxes/{box}/execs/{exec}/logs");
    add({"POST"}, "/v1/boxes/{box}/execs/{exec}/kill");
    add({"POST"}, "/v1/boxes/{box}/execs/{exec}/stdin");
    add({"GET", "PUT", "DELETE"}, "/v1/boxes/{box}/files");
    add({"GET"}, "/v1/boxes/{box}/files/list");
    add({"GET"}, "/v1/boxes/{box}/files/stat");
    add({"POST"}, "/v1/boxes/{box}/files/mkdir");
    add({"POST"}, "/v1/boxes/{box}/files/move");
    add({"GET", "PUT"}, "/v1/boxes/{box}/files/archive");
    add({"GET"}, "/v1/snapshots");
    add({"PUT"}, "/v1/snapshots/import");
    add({"GET", "DELETE"}, "/v1/snapshots/{snapshot}");
    add({"GET"}, "/v1/snapshots/{snapshot}/export");
    add({"GET"}, "/v1/images");
    add({"GET", "DELETE"}, "/v1/images/{snapshot}");
    add({"POST"}, "/v1/pipelines");
    add({"GET"}, "/v1/sessions");
    add({"GET", "DELETE"}, "/v1/sessions/{session}");
    add({"GET"}, "/v1/sessions/{session}/context");
    add({"GET"}, "/v1/sessions/{session}/export");
    return t;
  }();
  return table;
}

namespace {

std::vector<std::string> segments(std::string_view path) {
  path = path.substr(0, path.find('?'));
  auto seg = split(path, '/');
  if (!seg.empty() && seg.front().empty()) seg.erase(seg.begin());
  if (!seg.empty() && seg.back().empty()) seg.pop_back();
  return seg;
}

bool is_param(const std::string& s) { return s.size() > 2 && s.front() == '{' && s.back() == '}'; }

}  // namespace

std::optional<Match> match(std::string_view method, std::string_view path) {
  auto want = segments(path);
  std::optional<Match> best;
  size_t best_literals = 0;
  for (const auto& r : routes()) {
    auto seg = segments(r.path);
    if (seg.size() != want.size()) continue;
    Match m;
    size_t literals = 0;
    bool ok = true;
    for (size_t i = 0; i < seg.size() && ok; i++) {
      if (is_param(seg[i])) {
        ok = !want[i].empty();
        m.params[seg[i].substr(1, seg[i].size() - 2)] = want[i];
      } else {
        ok = seg[i] == want[i];
        literals++;
      }
    }
    if (!ok) continue;
    m.path = r.path;
    m.method_allowed = r.method == method;
    // More literal segments win; among routes of the same template, the one for this method.
    bool better = !best || literals > best_literals ||
                  (literals == best_literals && m.path == best->path && m.method_allowed);
    if (better) {
      best = std::move(m);
      best_literals = literals;
    }
  }
  return best;
}

std::string route_label(std::string_view method, std::string_view path) {
  auto m = match(method, path);
  return m ? m->path : "unmatched";
}

std::string path(std::string_view tmpl, std::initializer_list<std::string> params) {
  std::string out;
  auto it = params.begin();
  for (const auto& s : segments(tmpl)) {
    out += "/";
    if (!is_param(s)) {
      out += s;
      continue;
    }
    if (it == params.end())
      throw Error(Errc::invalid_argument, "too few parameters for " + std::string(tmpl));
    out += url_encode(*it++);
  }
  if (it != params.end())
    throw Error(Errc::invalid_argument, "too many parameters for " + std::string(tmpl));
  return out;
}

}  // namespace upstream::api
