// The JSON shapes of boxes and execs that every front shows (the CLI's --json output and the HTTP
// API), so that both speak the same language.
#include "engine/wire.h"

#include <csignal>
#include <cstring>

#include "common/error.h"
#include "common/strings.h"
#include "common/time.h"

namespace upstream {

using nlohmann::json;

json box_json(const BoxRecord& b, const BoxUsage* usage, const std::vector<BoxEvent>* events) {
  json limits = json::object();
  if (b.spec.limits.cpu_milli)
    limits["cpus"] = static_cast<double>(*b.spec.limits.cpu_milli) / 1000.0;
  if (b.spec.limits.memory) limits["memory_bytes"] = *b.spec.limits.memory;
  if (b.spec.limits.pids) limits["pids"] = *b.spec.limits.pids;
  if (b.spec.limits.disk) limits["disk_bytes"] = *b.spec.limits.disk;
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
            {"created_at", format_time(b.created_at)},
            {"started_at", format_time(b.started_at)},
            {"stopped_at", format_time(b.stopped_at)}};
  if (b.state == box_state::running) {
    j["init_pid"] = b.init_pid;
    if (b.slot) j["host_uid_base"] = 268435456u + *b.slot * 65536u;
  }
  if (usage) {
    j["usage"] = {{"cpu_seconds", static_cast<double>(usage->cpu_us) / 1e6},
                  {"memory_bytes", usage->memory},
                  {"memory_peak_bytes", usage->memory_peak},
                  {"pids", usage->pids},
                  {"oom_kills", usage->oom_kills}};
    if (usage->disk_bytes) j["usage"]["disk_bytes"] = *usage->disk_bytes;
  }
  if (events) {
    json ev = json::array();
    for (const auto& e : *events)
      ev.push_back({{"at", format_time(e.at)}, {"state", e.state}, {"reason", e.reason}});
    j["events"] = ev;
  }
  return j;
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
