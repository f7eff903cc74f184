
#include <sys/stat.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <map>
#include <mutex>

#include "common/fd.h"
#include "common/log.h"
#include "common/strings.h"
#include "common/time.h"
#include "model/egress.h"
#include "netd/internal.h"
#include "netd/netd.h"

namespace upstream::netd {

json stats_json(const BoxStats& s) {
  json d = json::object();
  for (const auto& [k, v] : s.dests)
    d[k] = {{"connections", v.connections},
            {"requests", v.requests},
            {"bytes_out", v.bytes_out},
            {"bytes_in", v.bytes_in},
            {"last_at", format_time(v.last_at)}};
  json den = json::array();
  for (const auto& [k, v] : s.denied)
    den.push_back({{"destination", k.first},
                   {"reason", k.second},
                   {"count", v.count},
                   {"last_at", format_time(v.last_at)}});
  return {{"box_id", s.box_id},
          {"destinations", d},
          {"denied", den},
          {"dns", {{"queries", s.dns_queries}, {"refused", s.dns_refused}}}};
}

BoxStats stats_from_json(const json& j) {
  BoxStats s;
  s.box_id = j.value("box_id", "");
  if (j.contains("destinations"))
    for (const auto& [k, v] : j["destinations"].items()) {
      Dest d;
      d.connections = v.value("connections", uint64_t{0});
      d.requests = v.value("requests", uint64_t{0});
      d.bytes_out = v.value("bytes_out", uint64_t{0});
      d.bytes_in = v.value("bytes_in", uint64_t{0});
      d.last_at = parse_time(v.value("last_at", ""));
      s.dests[k] = d;
    }
  if (j.contains("denied"))
    for (const auto& v : j["denied"]) {
      Denied d;
      d.count = v.value("count", uint64_t{0});
      d.last_at = parse_time(v.value("last_at", ""));
      s.denied[{v.value("destination", ""), v.value("reason", "")}] = d;
    }
  if (j.contains("dns")) {
    s.dns_queries = j["dns"].value("queries", uint64_t{0});
    s.dns_refused = j["dns"].value("refused", uint64_t{0});
  }
  return s;
}

Counters counters;

void Counters::deny(const egress::BoxPolicy& p, const std::string& dest,
                    const std::string& reason) {
  bool now = false;
  update(p, [&](BoxStats& s) {
    auto& d = s.denied[{dest, reason}];
    d.count++;
    d.last_at = now_ms();
    int64_t t = mono_us();
    if (t - s.refusal_window_us >= 1'000'000) {
      s.refusal_window_us = t;
      s.refusal_writes = 0;
    }
    now = ++s.refusal_writes <= 50;
  });
  if (now) write(&p.stats_path);
}

void Counters::flush() { write(nullptr); }

void Counters::write(const std::string* only) {
  std::lock_guard w(write_mu_);
  std::map<std::string, json> out;
  {
    std::lock_guard g(mu_);
    for (auto& [path, s] : boxes_)
      if (s.dirty && (!only || path == *only)) {
        out[path] = stats_json(s);
        s.dirty = false;
      }
  }
  for (const auto& [path, j] : out) {
    std::string parent = path.substr(0, path.find_last_of('/'));
    struct stat st;
    if (::stat(parent.c_str(), &st) != 0) {
      std::lock_guard g(mu_);
      boxes_.erase(path);
      continue;
    }
    try {
      // Counters, not state: no sync (a crash loses at most the last quarter second).
      write_file_atomic_with(
          path, 0600, [&](int fd) { write_all(fd, j.dump() + "\n"); }, false);
    } catch (const std::exception& e) {
      log(LogLevel::warning, "cannot write the counters " + path + ": " + e.what());
    }
  }
}

}  // namespace upstream::netd
