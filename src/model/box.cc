#include "model/box.h"

#include <cmath>

#include "common/error.h"
#include "common/strings.h"
#include "common/time.h"
#include "model/egress.h"
#include "model/fields.h"

namespace upstream {

using nlohmann::json;

std::string to_string(NetworkMode m) {
  switch (m) {
    case NetworkMode::none:
      return "none";
    case NetworkMode::allow_all:
      return "allow-all";
    case NetworkMode::custom:
      return "custom";
  }
  return "none";
}

NetworkMode parse_network_mode(const std::string& text) {
  if (text == "none") return NetworkMode::none;
  if (text == "allow-all") return NetworkMode::allow_all;
  if (text == "custom") return NetworkMode::custom;
  throw_invalid("invalid network mode '" + text +
                "': use none (loopback only), allow-all (the internet, never private ranges, "
                "the host or other boxes) or custom (allowed domains and CIDRs only)");
}

// --- limits and policy -----------------------------------------------------------------------

json limits_to_json(const Limits& l) {
  json j = json::object();
  if (l.cpu_milli) j["cpus"] = static_cast<double>(*l.cpu_milli) / 1000.0;
  if (l.memory) j["memory"] = *l.memory;
  if (l.pids) j["pids"] = *l.pids;
  if (l.disk) j["disk"] = *l.disk;
  return j;
}

Limits limits_from_json(const json& j, const std::string& field) {
  Fields f(j, field, {"cpus", "memory", "pids", "disk"});
  Limits out;
  auto size_of = [&](const char* key, const char* what) -> std::optional<uint64_t> {
    const json* v = f.get(key);
    if (!v) return std::nullopt;
    if (v->is_number_integer() && v->get<int64_t>() >= 0) return v->get<uint64_t>();
    if (v->is_string()) return parse_size(v->get<std::string>(), what);
    f.fail(key, "must be a number of bytes or a size such as \"512m\"");
  };
  if (const json* v = f.get("cpus")) {
    double cpus = v->is_number() ? v->get<double>()
                  : v->is_string()
                      ? static_cast<double>(parse_cpus_milli(v->get<std::string>())) / 1000.0
                      : -1;
    if (!(cpus > 0) || cpus > 4096)
      f.fail("cpus", "must be a number of CPUs above 0, such as 0.5 or 2");
    out.cpu_milli = static_cast<uint64_t>(std::llround(cpus * 1000));
  }
  out.memory = size_of("memory", "memory limit");
  out.disk = size_of("disk", "disk limit");
  out.pids = f.uint("pids");
  return out;
}

json policy_to_json(const Policy& p) {
  return {{"auto_pause_ms", p.auto_pause_ms},
          {"auto_stop_ms", p.auto_stop_ms},
          {"auto_archive_ms", p.auto_archive_ms},
          {"keep_alive", p.keep_alive}};
}

Policy policy_from_json(const json& j, const std::string& field) {
  Fields f(j, field, {"auto_pause_ms", "auto_stop_ms", "auto_archive_ms", "keep_alive"});
  Policy p;
  for (const char* k : {"auto_pause_ms", "auto_stop_ms", "auto_archive_ms"})
    if (const json* v = f.get(k)) {
      if (!v->is_number_integer() || v->get<int64_t>() < 0)
        f.fail(k, "must be a whole number of ms (0: never)");
      (std::string(k) == "auto_pause_ms"  ? p.auto_pause_ms
       : std::string(k) == "auto_stop_ms" ? p.auto_stop_ms
                                          : p.auto_archive_ms) = v->get<int64_t>();
    }
  if (auto v = f.boolean("keep_alive")) p.keep_alive = *v;
  return p;
}

// --- the box spec ----------------------------------------------------------------------------

namespace {

json env_to_json(const std::vector<std::string>& env) {
  json j = json::object();
  for (const auto& e : env) {
    auto eq = e.find('=');
    j[e.substr(0, eq)] = eq == std::string::npos ? "" : e.substr(eq + 1);
  }
  return j;
}

std::vector<std::string> env_from_fields(const Fields& f) {
  std::vector<std::string> out;
  for (const auto& [k, v] : f.string_map("env")) {
    if (!valid_env_name(k)) throw_invalid("env: '" + k + "' is not a valid variable name");
    out.push_back(k + "=" + v);
  }
  return out;
}

}  // namespace

json spec_to_json(const BoxSpec& s, Secrets secrets) {
  return {{"image", s.image},
          {"name", s.name},
          {"labels", s.labels},
          {"env", env_to_json(s.env)},
          {"limits", limits_to_json(s.limits)},
          {"user", s.user},
          {"workdir", s.workdir},
          {"network", to_string(s.network)},
          {"egress", egress::to_json(s.egress, secrets == Secrets::kept)},
          {"policy", policy_to_json(s.policy)}};
}

BoxSpec spec_from_json(const json& j, const std::string& where,
                       std::initializer_list<const char*> extra) {
  std::vector<std::string> known = {"image", "name",    "labels",  "env",    "limits",
                                    "user",  "workdir", "network", "egress", "policy"};
  known.insert(known.end(), extra.begin(), extra.end());
  Fields f(j, where, known);
  BoxSpec s;
  if (auto v = f.str("image")) s.image = *v;
  if (auto v = f.str("name")) s.name = *v;
  s.labels = f.string_map("labels");
  s.env = env_from_fields(f);
  if (const json* v = f.get("limits")) s.limits = limits_from_json(*v, f.name("limits"));
  if (auto v = f.str("user")) s.user = *v;
  if (auto v = f.str("workdir")) s.workdir = *v;
  if (auto v = f.str("network")) s.network = parse_network_mode(*v);
  if (const json* v = f.get("egress")) s.egress = egress::from_json(*v);
  if (const json* v = f.get("policy")) s.policy = policy_from_json(*v, f.name("policy"));
  return s;
}

json upgrade_spec_v1(json j) {
  if (j.contains("limits") && j["limits"].is_object()) {
    json& l = j["limits"];
    if (l.contains("cpu_milli")) {
      l["cpus"] = static_cast<double>(l["cpu_milli"].get<uint64_t>()) / 1000.0;
      l.erase("cpu_milli");
    }
    for (auto [old, now] : {std::pair{"memory_bytes", "memory"}, std::pair{"disk_bytes", "disk"}})
      if (l.contains(old)) {
        l[now] = l[old];
        l.erase(old);
      }
  }
  if (j.contains("env") && j["env"].is_array()) {
    std::vector<std::string> env;
    for (const auto& e : j["env"]) env.push_back(e.get<std::string>());
    j["env"] = env_to_json(env);
  }
  return j;
}

// --- records -----------------------------------------------------------------------------------

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

BoxUsage usage_from_json(const json& u) {
  BoxUsage out;
  out.cpu_us = static_cast<uint64_t>(u.value("cpu_seconds", 0.0) * 1e6 + 0.5);
  out.memory = u.value("memory_bytes", uint64_t{0});
  out.memory_peak = u.value("memory_peak_bytes", uint64_t{0});
  out.pids = u.value("pids", uint64_t{0});
  out.oom_kills = u.value("oom_kills", uint64_t{0});
  if (u.contains("disk_bytes")) out.disk_bytes = u["disk_bytes"].get<uint64_t>();
  out.running_ms = static_cast<int64_t>(u.value("running_seconds", 0.0) * 1000 + 0.5);
  out.snapshots = u.value("snapshots", size_t{0});
  out.snapshot_bytes = u.value("snapshot_bytes", uint64_t{0});
  return out;
}

namespace {

// The fields of a box record beyond its spec.
const std::initializer_list<const char*> kRecordFields = {
    "id",         "state",    "state_reason",  "last_active_at", "created_at", "started_at",
    "stopped_at", "init_pid", "host_uid_base", "address",        "usage",      "events"};

}  // namespace

json box_json(const BoxRecord& b, const BoxUsage* usage, const std::vector<BoxEvent>* events) {
  json j = spec_to_json(b.spec, Secrets::names);
  j["id"] = b.id;
  j["name"] = b.name;
  j["state"] = b.state;
  j["state_reason"] = b.state_reason;
  j["last_active_at"] = format_time(std::max(b.last_active_at, b.created_at));
  j["created_at"] = format_time(b.created_at);
  j["started_at"] = format_time(b.started_at);
  j["stopped_at"] = format_time(b.stopped_at);
  if (box_state::alive(b.state)) {
    j["init_pid"] = b.init_pid;
    if (b.slot) j["host_uid_base"] = 268435456u + *b.slot * 65536u;
    if (b.slot && b.spec.network != NetworkMode::none && *b.slot < egress::kMaxNetSlots)
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

BoxRecord box_from_json(const json& j, BoxUsage* usage, std::vector<BoxEvent>* events) {
  try {
    BoxRecord b;
    // A record names its headers without their values (box_json): read back, each value is
    // empty (what a request sends is read strictly, values and all).
    json in = j;
    if (auto g = in.find("egress"); g != in.end() && g->is_object())
      if (auto h = g->find("headers"); h != g->end() && h->is_object())
        for (auto& [host, names] : h->items())
          if (names.is_array()) {
            json values = json::object();
            for (const auto& n : names) values[n.get<std::string>()] = "";
            names = std::move(values);
          }
    b.spec = spec_from_json(in, "", kRecordFields);
    b.id = j.at("id").get<std::string>();
    b.name = b.spec.name;
    b.state = j.at("state").get<std::string>();
    b.state_reason = j.value("state_reason", "");
    b.last_active_at = parse_time(j.value("last_active_at", ""));
    b.created_at = parse_time(j.value("created_at", ""));
    b.started_at = parse_time(j.value("started_at", ""));
    b.stopped_at = parse_time(j.value("stopped_at", ""));
    b.init_pid = j.value("init_pid", 0);
    if (j.contains("host_uid_base"))
      b.slot = static_cast<uint32_t>((j["host_uid_base"].get<uint64_t>() - 268435456u) / 65536u);
    if (usage && j.contains("usage")) *usage = usage_from_json(j["usage"]);
    if (events && j.contains("events"))
      for (const auto& e : j["events"])
        events->push_back(
            {parse_time(e.value("at", "")), e.value("state", ""), e.value("reason", "")});
    return b;
  } catch (const std::exception& e) {
    throw Error(Errc::internal, std::string("unexpected box record from the server: ") + e.what());
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

json snapshot_json(const SnapshotRecord& s) {
  json j = {{"id", s.id},
            {"name", s.name},
            {"kind", s.kind},
            {"base_image", s.base_image},
            {"layers", s.layers},
            {"bytes", s.bytes},
            {"total_bytes", s.total_bytes},
            {"created_at", format_time(s.created_at)},
            {"labels", s.labels},
            {"env", env_to_json(s.config.env)},
            {"limits", limits_to_json(s.config.limits)},
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
    // The configuration part is a spec's, read by the spec's own decoder.
    json config = json::object();
    for (const char* k : {"env", "limits", "user", "workdir"})
      if (j.contains(k)) config[k] = j[k];
    s.config = spec_from_json(config, "");
    s.ephemeral = j.value("ephemeral", false);
    if (j.contains("source_box") && j["source_box"].is_string())
      s.source_box = j["source_box"].get<std::string>();
    if (j.contains("parent") && j["parent"].is_string()) s.parent = j["parent"].get<std::string>();
    if (j.contains("frozen_ms") && j["frozen_ms"].is_number())
      s.frozen_us = static_cast<int64_t>(j["frozen_ms"].get<double>() * 1000.0);
    return s;
  } catch (const std::exception& e) {
    throw Error(Errc::internal, std::string("unexpected snapshot from the server: ") + e.what());
  }
}

}  // namespace upstream
