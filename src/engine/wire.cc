// The JSON shapes of boxes and execs that every front shows (the CLI's --json output and the HTTP
// API), so that both speak the same language.
#include "engine/wire.h"

#include <csignal>
#include <cstring>

#include "common/error.h"
#include "common/strings.h"
#include "common/time.h"
#include "model/egress.h"
#include "runtime/net.h"

namespace upstream {

using nlohmann::json;

json exposure_json(const Engine::Exposure& e) {
  json j = {{"id", e.id},
            {"box_id", e.box_id},
            {"box_name", e.box_name},
            {"port", e.port},
            {"host_port", e.host_port},
            {"url", e.url},
            {"auth", e.auth},
            {"created_at", format_time(e.created_at)}};
  if (!e.username.empty()) j["username"] = e.username;
  if (!e.token.empty()) j["token"] = e.token;
  if (!e.password.empty()) j["password"] = e.password;
  return j;
}

Engine::Exposure exposure_from_json(const json& j) {
  try {
    Engine::Exposure e;
    e.id = j.at("id").get<std::string>();
    e.box_id = j.value("box_id", "");
    e.box_name = j.value("box_name", "");
    e.port = j.at("port").get<uint16_t>();
    e.host_port = j.value("host_port", uint16_t{0});
    e.url = j.at("url").get<std::string>();
    e.auth = j.at("auth").get<std::string>();
    e.created_at = parse_time(j.value("created_at", ""));
    e.username = j.value("username", "");
    e.token = j.value("token", "");
    e.password = j.value("password", "");
    return e;
  } catch (const json::exception& x) {
    throw Error(Errc::internal, std::string("unexpected exposure from the server: ") + x.what());
  }
}

namespace {

json usage_group_json(const Engine::UsageGroup& g) {
  json j = {{"key", g.key},
            {"boxes", g.boxes},
            {"snapshots", g.snapshots},
            {"cpu_seconds", g.cpu_s},
            {"running_seconds", g.running_s},
            {"core_running_seconds", g.core_running_s},
            {"box_storage_gb_months", g.box_gb_months},
            {"snapshot_storage_gb_months", g.snapshot_gb_months},
            {"memory_peak_bytes", g.memory_peak}};
  if (g.cost) j["cost"] = *g.cost;
  if (g.wall_clock_cost) j["wall_clock_cost"] = *g.wall_clock_cost;
  return j;
}

Engine::UsageGroup usage_group_from_json(const json& j) {
  Engine::UsageGroup g;
  g.key = j.value("key", "");
  g.boxes = j.value("boxes", size_t{0});
  g.snapshots = j.value("snapshots", size_t{0});
  g.cpu_s = j.value("cpu_seconds", 0.0);
  g.running_s = j.value("running_seconds", 0.0);
  g.core_running_s = j.value("core_running_seconds", 0.0);
  g.box_gb_months = j.value("box_storage_gb_months", 0.0);
  g.snapshot_gb_months = j.value("snapshot_storage_gb_months", 0.0);
  g.memory_peak = j.value("memory_peak_bytes", uint64_t{0});
  if (j.contains("cost")) g.cost = j["cost"].get<double>();
  if (j.contains("wall_clock_cost")) g.wall_clock_cost = j["wall_clock_cost"].get<double>();
  return g;
}

}  // namespace

json usage_report_json(const Engine::UsageReport& r) {
  json groups = json::array();
  for (const auto& g : r.groups) groups.push_back(usage_group_json(g));
  json j = {{"since", format_time(r.since)},
            {"until", format_time(r.until)},
            {"groups", groups},
            {"total", usage_group_json(r.total)}};
  if (r.prices.any()) {
    json p = {{"currency", r.prices.currency}};
    if (r.prices.cpu_core_hour) p["cpu_core_hour"] = *r.prices.cpu_core_hour;
    if (r.prices.storage_gb_month) p["storage_gb_month"] = *r.prices.storage_gb_month;
    if (r.prices.wall_core_hour) p["wall_core_hour"] = *r.prices.wall_core_hour;
    j["prices"] = p;
  }
  return j;
}

Engine::UsageReport usage_report_from_json(const json& j) {
  try {
    Engine::UsageReport r;
    r.since = parse_time(j.at("since").get<std::string>());
    r.until = parse_time(j.at("until").get<std::string>());
    for (const auto& g : j.at("groups")) r.groups.push_back(usage_group_from_json(g));
    r.total = usage_group_from_json(j.at("total"));
    if (j.contains("prices")) {
      const json& p = j["prices"];
      r.prices.currency = p.value("currency", "USD");
      if (p.contains("cpu_core_hour")) r.prices.cpu_core_hour = p["cpu_core_hour"].get<double>();
      if (p.contains("storage_gb_month"))
        r.prices.storage_gb_month = p["storage_gb_month"].get<double>();
      if (p.contains("wall_core_hour")) r.prices.wall_core_hour = p["wall_core_hour"].get<double>();
    }
    return r;
  } catch (const json::exception& e) {
    throw Error(Errc::internal,
                std::string("unexpected usage report from the server: ") + e.what());
  }
}

int parse_signal(const std::string& text) {
  std::string t = text;
  for (auto& c : t) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (!t.empty() && t.find_first_not_of("0123456789") == std::string::npos) {
    int n = std::stoi(t);
    if (n >= 1 && n < NSIG) return n;
  }
  if (starts_with(t, "SIG")) t = t.substr(3);
  for (int s = 1; s < NSIG; s++) {
    const char* name = sigabbrev_np(s);
    if (name && t == name) return s;
  }
  throw_invalid("unknown signal '" + text + "'");
}

}  // namespace upstream
