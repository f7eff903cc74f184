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

namespace {

json limits_shape(const Limits& l) {
  json limits = json::object();
  if (l.cpu_milli) limits["cpus"] = static_cast<double>(*l.cpu_milli) / 1000.0;
  if (l.memory) limits["memory_bytes"] = *l.memory;
  if (l.pids) limits["pids"] = *l.pids;
  if (l.disk) limits["disk_bytes"] = *l.disk;
  return limits;
}

}  // namespace

json box_json(const BoxRecord& b, const BoxUsage* usage, const std::vector<BoxEvent>* events) {
  json limits = limits_shape(b.spec.limits);
  json j = {{"id", b.id},
            {"name", b.name},
            {"state", b.state},
            {"state_reason", b.state_reason},
            {"image", b.spec.image},
            {"labels", b.spec.labels},
            {"env", b.spec.env},
            {"limits", limits},
            {"user", b.spec.user},
            {"workdir", b.spec.workdir},
            {"network", b.spec.network},
            {"egress", egress::to_json(b.spec.egress, false)},
            {"policy",
             {{"auto_pause_ms", b.spec.policy.auto_pause_ms},
              {"auto_stop_ms", b.spec.policy.auto_stop_ms},
              {"auto_archive_ms", b.spec.policy.auto_archive_ms},
              {"keep_alive", b.spec.policy.keep_alive}}},
            {"last_active_at", format_time(std::max(b.last_active_at, b.created_at))},
            {"created_at", format_time(b.created_at)},
            {"started_at", format_time(b.started_at)},
            {"stopped_at", format_time(b.stopped_at)}};
  if (box_state::alive(b.state)) {
    j["init_pid"] = b.init_pid;
    if (b.slot) j["host_uid_base"] = 268435456u + *b.slot * 65536u;
    if (b.slot && b.spec.network != "none" && *b.slot < egress::kMaxNetSlots)
      j["address"] = egress::net_addrs(*b.slot).box_ip;
  }
  if (usage) j["usage"] = usage_json(*usage);
  if (events) {
    json ev = json::array();
    for (const auto& e : *events)
      ev.push_back({{"at", format_time(e.at)}, {"state", e.state}, {"reason", e.reason}});
    j["events"] = ev;
  }
  return j;
}

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

json exec_json(const ExecRecord& e) {
  json j = {{"box_id", e.box_id},
            {"exec", e.seq},
            {"argv", e.argv},
            {"user", e.user},
            {"cwd", e.cwd},
            {"background", e.background},
            {"tty", e.tty},
            {"state", e.state},
            {"pid", e.pid},
            {"started_at", format_time(e.started_at)},
            {"ended_at", format_time(e.ended_at)},
            {"exit_code", e.exit_code ? json(*e.exit_code) : json(nullptr)},
            {"signal", e.signal},
            {"reason", e.reason},
            {"timed_out", e.timed_out},
            {"oom_killed", e.oom_killed},
            {"cpu_seconds", static_cast<double>(e.cpu_us) / 1e6},
            {"max_rss_bytes", e.max_rss_kb * 1024},
            {"stdout_bytes", e.stdout_bytes},
            {"stderr_bytes", e.stderr_bytes}};
  if (e.ended_at && e.started_at) j["duration_ms"] = e.ended_at - e.started_at;
  return j;
}

json usage_json(const BoxUsage& u) {
  json j = {{"cpu_seconds", static_cast<double>(u.cpu_us) / 1e6},
            {"memory_bytes", u.memory},
            {"memory_peak_bytes", u.memory_peak},
            {"pids", u.pids},
            {"oom_kills", u.oom_kills},
            {"running_seconds", static_cast<double>(u.running_ms) / 1000.0},
            {"snapshots", u.snapshots},
            {"snapshot_bytes", u.snapshot_bytes}};
  if (u.disk_bytes) j["disk_bytes"] = *u.disk_bytes;
  return j;
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

BoxRecord box_from_json(const json& j, BoxUsage* usage, std::vector<BoxEvent>* events) {
  try {
    BoxRecord b;
    b.id = j.at("id").get<std::string>();
    b.name = j.at("name").get<std::string>();
    b.state = j.at("state").get<std::string>();
    b.state_reason = j.value("state_reason", "");
    b.spec.name = b.name;
    b.spec.image = j.value("image", "host");
    b.spec.labels = j.value("labels", std::map<std::string, std::string>{});
    b.spec.env = j.value("env", std::vector<std::string>{});
    b.spec.user = j.value("user", "root");
    b.spec.workdir = j.value("workdir", "/home/user");
    b.spec.network = j.value("network", "none");
    if (j.contains("egress") && j["egress"].is_object()) {
      const json& e = j["egress"];
      b.spec.egress.allow_domains = e.value("allow_domains", std::vector<std::string>{});
      b.spec.egress.allow_cidrs = e.value("allow_cidrs", std::vector<std::string>{});
      b.spec.egress.deny_cidrs = e.value("deny_cidrs", std::vector<std::string>{});
      if (e.contains("headers") && e["headers"].is_object())
        for (const auto& [pattern, names] : e["headers"].items())
          for (const auto& n : names) b.spec.egress.headers[pattern][n.get<std::string>()] = "";
    }
    if (j.contains("policy") && j["policy"].is_object()) {
      const json& p = j["policy"];
      b.spec.policy.auto_pause_ms = p.value("auto_pause_ms", b.spec.policy.auto_pause_ms);
      b.spec.policy.auto_stop_ms = p.value("auto_stop_ms", b.spec.policy.auto_stop_ms);
      b.spec.policy.auto_archive_ms = p.value("auto_archive_ms", b.spec.policy.auto_archive_ms);
      b.spec.policy.keep_alive = p.value("keep_alive", false);
    }
    b.last_active_at = parse_time(j.value("last_active_at", ""));
    if (j.contains("limits")) {
      const json& l = j["limits"];
      if (l.contains("cpus"))
        b.spec.limits.cpu_milli = static_cast<uint64_t>(l["cpus"].get<double>() * 1000 + 0.5);
      if (l.contains("memory_bytes")) b.spec.limits.memory = l["memory_bytes"].get<uint64_t>();
      if (l.contains("pids")) b.spec.limits.pids = l["pids"].get<uint64_t>();
      if (l.contains("disk_bytes")) b.spec.limits.disk = l["disk_bytes"].get<uint64_t>();
    }
    b.created_at = parse_time(j.value("created_at", ""));
    b.started_at = parse_time(j.value("started_at", ""));
    b.stopped_at = parse_time(j.value("stopped_at", ""));
    b.init_pid = j.value("init_pid", 0);
    if (j.contains("host_uid_base"))
      b.slot = static_cast<uint32_t>((j["host_uid_base"].get<uint64_t>() - 268435456u) / 65536u);
    if (usage && j.contains("usage")) {
      const json& u = j["usage"];
      usage->cpu_us = static_cast<uint64_t>(u.value("cpu_seconds", 0.0) * 1e6 + 0.5);
      usage->memory = u.value("memory_bytes", uint64_t{0});
      usage->memory_peak = u.value("memory_peak_bytes", uint64_t{0});
      usage->pids = u.value("pids", uint64_t{0});
      usage->oom_kills = u.value("oom_kills", uint64_t{0});
      if (u.contains("disk_bytes")) usage->disk_bytes = u["disk_bytes"].get<uint64_t>();
      usage->running_ms = static_cast<int64_t>(u.value("running_seconds", 0.0) * 1000 + 0.5);
      usage->snapshots = u.value("snapshots", size_t{0});
      usage->snapshot_bytes = u.value("snapshot_bytes", uint64_t{0});
    }
    if (events && j.contains("events"))
      for (const auto& e : j["events"])
        events->push_back(
            {parse_time(e.value("at", "")), e.value("state", ""), e.value("reason", "")});
    return b;
  } catch (const json::exception& e) {
    throw Error(Errc::internal, std::string("unexpected box record from the server: ") + e.what());
  }
}

ExecRecord exec_from_json(const json& j) {
  try {
    ExecRecord e;
    e.box_id = j.value("box_id", "");
    e.seq = j.at("exec").get<uint64_t>();
    e.argv = j.value("argv", std::vector<std::string>{});
    e.user = j.value("user", "");
    e.cwd = j.value("cwd", "");
    e.background = j.value("background", false);
    e.tty = j.value("tty", false);
    e.state = j.value("state", "");
    e.pid = j.value("pid", 0);
    e.started_at = parse_time(j.value("started_at", ""));
    e.ended_at = parse_time(j.value("ended_at", ""));
    if (j.contains("exit_code") && !j["exit_code"].is_null())
      e.exit_code = j["exit_code"].get<int>();
    e.signal = j.value("signal", 0);
    e.reason = j.value("reason", "");
    e.timed_out = j.value("timed_out", false);
    e.oom_killed = j.value("oom_killed", false);
    e.cpu_us = static_cast<uint64_t>(j.value("cpu_seconds", 0.0) * 1e6 + 0.5);
    e.max_rss_kb = j.value("max_rss_bytes", uint64_t{0}) / 1024;
    e.stdout_bytes = j.value("stdout_bytes", uint64_t{0});
    e.stderr_bytes = j.value("stderr_bytes", uint64_t{0});
    e.stdout_tail = j.value("stdout_tail", "");
    e.stderr_tail = j.value("stderr_tail", "");
    return e;
  } catch (const json::exception& x) {
    throw Error(Errc::internal, std::string("unexpected exec record from the server: ") + x.what());
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

json snapshot_json(const SnapshotRecord& s) {
  json limits = limits_shape(s.config.limits);
  json j = {{"id", s.id},
            {"name", s.name},
            {"kind", s.kind},
            {"base_image", s.base_image},
            {"layers", s.layers},
            {"bytes", s.bytes},
            {"total_bytes", s.total_bytes},
            {"created_at", format_time(s.created_at)},
            {"labels", s.labels},
            {"env", s.config.env},
            {"limits", limits},
            {"user", s.config.user},
            {"workdir", s.config.workdir},
            {"ephemeral", s.ephemeral}};
  j["source_box"] = s.source_box.empty() ? json(nullptr) : json(s.source_box);
  j["parent"] = s.parent.empty() ? json(nullptr) : json(s.parent);
  if (s.frozen_us >= 0) j["frozen_ms"] = static_cast<double>(s.frozen_us) / 1000.0;
  return j;
}

SnapshotRecord snapshot_from_json(const json& j) {
  try {
    SnapshotRecord s;
    s.id = j.at("id").get<std::string>();
    s.name = j.at("name").get<std::string>();
    s.kind = j.at("kind").get<std::string>();
    s.base_image = j.at("base_image").get<std::string>();
    s.layers = j.at("layers").get<std::vector<std::string>>();
    s.bytes = j.at("bytes").get<uint64_t>();
    s.total_bytes = j.at("total_bytes").get<uint64_t>();
    s.created_at = parse_time(j.at("created_at").get<std::string>());
    s.labels = j.value("labels", std::map<std::string, std::string>{});
    s.config.env = j.value("env", std::vector<std::string>{});
    const json& l = j.at("limits");
    if (l.contains("cpus"))
      s.config.limits.cpu_milli = static_cast<uint64_t>(l["cpus"].get<double>() * 1000.0 + 0.5);
    if (l.contains("memory_bytes")) s.config.limits.memory = l["memory_bytes"].get<uint64_t>();
    if (l.contains("pids")) s.config.limits.pids = l["pids"].get<uint64_t>();
    if (l.contains("disk_bytes")) s.config.limits.disk = l["disk_bytes"].get<uint64_t>();
    s.config.user = j.value("user", "root");
    s.config.workdir = j.value("workdir", "/home/user");
    s.ephemeral = j.value("ephemeral", false);
    if (j.contains("source_box") && j["source_box"].is_string())
      s.source_box = j["source_box"].get<std::string>();
    if (j.contains("parent") && j["parent"].is_string()) s.parent = j["parent"].get<std::string>();
    if (j.contains("frozen_ms") && j["frozen_ms"].is_number())
      s.frozen_us = static_cast<int64_t>(j["frozen_ms"].get<double>() * 1000.0);
    return s;
  } catch (const json::exception& e) {
    throw Error(Errc::internal, std::string("unexpected snapshot from the server: ") + e.what());
  }
}

}  // namespace upstream
