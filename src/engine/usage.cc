// Usage: what a box uses now (`box usage`), and metering over time. A meter pass writes one row
// per box and snapshot for the interval since its last mark: active CPU (the box's cgroup counter
// plus its finished runs), time running (from its recorded transitions), disk kept (sampled at
// the end of the interval, times its length). Rows outlive their box, so a report over a period
// includes boxes long removed.
#include <unistd.h>

#include <algorithm>

#include "common/error.h"
#include "common/strings.h"
#include "common/time.h"
#include "engine/impl.h"
#include "engine/meter.h"

namespace upstream {

namespace {

constexpr double kGiBMonthByteMs = 1024.0 * 1024 * 1024 * 30 * 24 * 3600 * 1000;

}  // namespace

BoxUsage Engine::usage(const std::string& ref) {
  Impl& I = *impl_;
  std::lock_guard g(I.mu);
  BoxRecord b = I.check_alive(I.store.resolve(ref));
  BoxUsage u;
  u.cpu_us = b.cpu_us_total;
  u.memory_peak = b.memory_peak;
  u.oom_kills = b.oom_kills_total;
  if (box_state::alive(b.state)) {
    runtime::CgroupUsage c = I.cgroup(b.id).usage();
    u.cpu_us += c.cpu_us;
    u.memory = c.memory;
    u.memory_peak = std::max(u.memory_peak, c.memory_peak);
    u.pids = c.pids;
    u.oom_kills += c.oom_kills;
  }
  u.disk_bytes = I.pool.volume_usage(b.id);
  if (!b.archive_layer.empty())
    if (auto l = I.store.find_layer(b.archive_layer))
      u.disk_bytes = u.disk_bytes.value_or(0) + l->bytes;
  u.running_ms = I.store.running_ms(b.id, b.created_at, now_ms());
  std::tie(u.snapshots, u.snapshot_bytes) = I.store.snapshots_of(b.id);
  return u;
}

UsageMeter::UsageMeter(store::BoxStore& store, const storage::Pool& pool,
                       const runtime::CgroupSystem& cgroups, const std::string& group)
    : store_(store), pool_(pool), cgroups_(cgroups), group_(group) {}

std::optional<std::pair<UsageRow, uint64_t>> UsageMeter::box_since_mark(const BoxRecord& b,
                                                                        int64_t now) {
  if (!b.pool.empty()) return std::nullopt;  // the pool's own time is nobody's
  store::BoxStore::Metered m = store_.metered("box", b.id);
  UsageRow r;
  r.kind = "box";
  r.subject = b.id;
  r.name = b.name;
  r.labels = b.spec.labels;
  r.start_at = std::max(m.at, b.created_at);
  r.end_at = now;
  if (r.end_at <= r.start_at) return std::nullopt;
  uint64_t counter = b.cpu_us_total;
  r.memory_peak = b.memory_peak;
  if (box_state::alive(b.state)) {
    runtime::CgroupUsage c = runtime::BoxCgroup(cgroups_, group_, b.id).usage();
    counter += c.cpu_us;
    r.memory_peak = std::max(r.memory_peak, c.memory_peak);
  }
  r.cpu_us = counter > m.cpu_us ? counter - m.cpu_us : 0;
  r.running_ms = store_.running_ms(b.id, r.start_at, r.end_at);
  r.cpus_milli = b.spec.limits.cpu_milli.value_or(0);
  r.bytes = pool_.volume_usage(b.id).value_or(0);
  if (!b.archive_layer.empty())
    if (auto l = store_.find_layer(b.archive_layer)) r.bytes += l->bytes;
  r.byte_ms = static_cast<double>(r.bytes) * static_cast<double>(r.end_at - r.start_at);
  return std::make_pair(r, counter);
}

std::optional<UsageRow> UsageMeter::snapshot_since_mark(const SnapshotRecord& s, int64_t now) {
  store::BoxStore::Metered m = store_.metered("snapshot", s.id);
  UsageRow r;
  r.kind = "snapshot";
  r.subject = s.id;
  r.name = s.name;
  r.labels = s.labels;
  r.start_at = std::max(m.at, s.created_at);
  r.end_at = now;
  if (r.end_at <= r.start_at) return std::nullopt;
  r.bytes = s.bytes;
  r.byte_ms = static_cast<double>(r.bytes) * static_cast<double>(r.end_at - r.start_at);
  return r;
}

void UsageMeter::record_box(const BoxRecord& b) {
  // The caller holds the box's lock (or the box is being removed under it): the record and the
  // cgroup are read between lifecycle changes, never across a stop.
  if (auto r = box_since_mark(b, now_ms())) store_.record_usage(r->first, r->second);
}

void UsageMeter::record_snapshot(const SnapshotRecord& s) {
  if (auto r = snapshot_since_mark(s, now_ms())) store_.record_usage(*r, 0);
}

size_t Engine::meter_usage() {
  Impl& I = *impl_;
  std::lock_guard g(I.mu);
  size_t n = 0;
  store::BoxFilter f;
  f.pooled = store::BoxFilter::Pooled::exclude;
  for (const auto& b : I.store.list(f)) {
    try {
      // A box in the middle of a start or stop is metered at the next pass.
      auto lock = FileLock::try_lock(I.layout.lock("box-" + b.id));
      if (!lock) continue;
      auto fresh = I.store.find_id(b.id);
      if (!fresh) continue;
      I.meter.record_box(I.check_alive(*fresh));
      n++;
    } catch (const Error&) {
    }
  }
  for (const auto& s : I.store.list_snapshots()) {
    I.meter.record_snapshot(s);
    n++;
  }
  return n;
}

Engine::UsageReport Engine::usage_report(const UsageQuery& q) {
  Impl& I = *impl_;
  if (q.until <= q.since) throw_invalid("the end of the period must be after its start");
  std::string label_key;
  if (starts_with(q.by, "label:")) {
    label_key = q.by.substr(6);
    parse_label(label_key + "=x");  // a valid key
  } else if (q.by != "tenant" && q.by != "box" && q.by != "snapshot" && q.by != "all") {
    throw_invalid("cannot group usage by '" + q.by +
                  "': use tenant, box, snapshot, all or label:KEY");
  }
  std::vector<UsageRow> rows;
  {
    std::lock_guard g(I.mu);
    rows = I.store.usage_rows(q.since, q.until);
    // What exists now and was not recorded yet (rows outside the period are skipped below).
    int64_t now = now_ms();
    store::BoxFilter f;
    f.pooled = store::BoxFilter::Pooled::exclude;
    for (const auto& b : I.store.list(f))
      if (auto r = I.meter.box_since_mark(I.check_alive(b), now)) rows.push_back(r->first);
    for (const auto& s : I.store.list_snapshots())
      if (auto r = I.meter.snapshot_since_mark(s, now)) rows.push_back(*r);
  }
  const double host_cpus = std::max<long>(1, ::sysconf(_SC_NPROCESSORS_ONLN));
  std::map<std::string, UsageGroup> groups;
  std::map<std::string, std::set<std::string>> boxes, snaps;
  UsageReport rep;
  rep.since = q.since;
  rep.until = q.until;
  rep.prices = opts_.prices;
  auto add = [&](UsageGroup& g, const UsageRow& r, double frac) {
    if (r.kind == "box") {
      g.cpu_s += static_cast<double>(r.cpu_us) / 1e6 * frac;
      double run_s = static_cast<double>(r.running_ms) / 1000.0 * frac;
      g.running_s += run_s;
      g.core_running_s +=
          run_s * (r.cpus_milli ? static_cast<double>(r.cpus_milli) / 1000.0 : host_cpus);
      g.box_gb_months += r.byte_ms * frac / kGiBMonthByteMs;
      g.memory_peak = std::max(g.memory_peak, r.memory_peak);
    } else {
      g.snapshot_gb_months += r.byte_ms * frac / kGiBMonthByteMs;
    }
  };
  for (const auto& r : rows) {
    bool match = true;
    for (const auto& [k, v] : q.labels) {
      auto it = r.labels.find(k);
      if (it == r.labels.end() || it->second != v) match = false;
    }
    if (!match) continue;
    std::string key;
    if (q.by == "tenant") {
      auto it = r.labels.find(kTenantLabel);
      key = it == r.labels.end() ? "" : it->second;
    } else if (q.by == "box") {
      if (r.kind != "box") continue;
      key = r.name + " (" + r.subject + ")";
    } else if (q.by == "snapshot") {
      if (r.kind != "snapshot") continue;
      key = r.name + " (" + r.subject + ")";
    } else if (q.by != "all") {
      auto it = r.labels.find(label_key);
      key = it == r.labels.end() ? "" : it->second;
    }
    // The part of the interval inside the period (CPU and storage spread evenly over it).
    int64_t from = std::max(r.start_at, q.since), to = std::min(r.end_at, q.until);
    if (to <= from) continue;
    double frac = static_cast<double>(to - from) /
                  static_cast<double>(std::max<int64_t>(1, r.end_at - r.start_at));
    UsageGroup& g = groups[key];
    g.key = key;
    add(g, r, frac);
    add(rep.total, r, frac);
    (r.kind == "box" ? boxes : snaps)[key].insert(r.subject);
    (r.kind == "box" ? boxes : snaps)["\x01total"].insert(r.subject);
  }
  const Prices& p = opts_.prices;
  auto price = [&](UsageGroup& g) {
    if (!p.any()) return;
    double storage_gbm = g.box_gb_months + g.snapshot_gb_months;
    double cost = g.cpu_s / 3600.0 * p.cpu_core_hour.value_or(0) +
                  storage_gbm * p.storage_gb_month.value_or(0);
    g.cost = cost;
    if (p.wall_core_hour)
      g.wall_clock_cost = g.core_running_s / 3600.0 * *p.wall_core_hour +
                          storage_gbm * p.storage_gb_month.value_or(0);
  };
  for (auto& [k, g] : groups) {
    g.boxes = boxes[k].size();
    g.snapshots = snaps[k].size();
    price(g);
    rep.groups.push_back(g);
  }
  rep.total.key = "total";
  rep.total.boxes = boxes["\x01total"].size();
  rep.total.snapshots = snaps["\x01total"].size();
  price(rep.total);
  return rep;
}

}  // namespace upstream
