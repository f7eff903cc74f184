// Durable boxes, in one run on this machine: snapshot time against the size of the changes,
// fan-out of many boxes from one snapshot, pause and resume latency, host memory per paused box,
// and, as the baseline of the same run, a cold create followed by its first exec.
//
//   durable_bench [--sizes-mb 10,100,1000] [--fan-out N] [--runs N] [--paused N] [--out FILE]
#include <sys/mount.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/fd.h"
#include "common/strings.h"
#include "common/time.h"
#include "engine/engine.h"
#include "storage/layout.h"

using namespace upstream;
using nlohmann::json;

namespace {

struct Stats {
  double p50 = 0, p99 = 0, mean = 0;
  size_t n = 0;
};

Stats stats(std::vector<double> v) {
  Stats s;
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  s.n = v.size();
  s.p50 = v[v.size() / 2];
  s.p99 = v[std::min(v.size() - 1, static_cast<size_t>(static_cast<double>(v.size()) * 0.99))];
  for (double x : v) s.mean += x;
  s.mean /= static_cast<double>(v.size());
  return s;
}

json stats_json(const Stats& s) {
  return {{"p50", s.p50}, {"p99", s.p99}, {"mean", s.mean}, {"runs", s.n}};
}

double ms_since(int64_t start_us) { return static_cast<double>(mono_us() - start_us) / 1000.0; }

ExecRecord run(Engine& e, const std::string& box, const std::string& shell) {
  ExecSpec x;
  x.argv = {"/bin/sh", "-c", shell};
  ExecRecord r = e.start_exec(box, x)->wait({});
  if (r.exit_code.value_or(-1) != 0) {
    std::fprintf(stderr, "exec failed in %s: %s\n%s\n", box.c_str(), shell.c_str(),
                 r.stderr_tail.c_str());
    std::exit(1);
  }
  return r;
}

uint64_t mem_available() {
  for (const auto& line : split(read_file("/proc/meminfo"), '\n'))
    if (starts_with(line, "MemAvailable:"))
      return std::strtoull(line.c_str() + 13, nullptr, 10) * 1024;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int> sizes = {10, 100, 1000};
  int fan_out = 100, runs = 50, paused = 20;
  std::string out;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--sizes-mb") {
      sizes.clear();
      for (const auto& s : split(next(), ',')) sizes.push_back(std::atoi(s.c_str()));
    } else if (a == "--fan-out") {
      fan_out = std::atoi(next().c_str());
    } else if (a == "--runs") {
      runs = std::atoi(next().c_str());
    } else if (a == "--paused") {
      paused = std::atoi(next().c_str());
    } else if (a == "--out") {
      out = next();
    } else {
      std::fprintf(stderr,
                   "usage: durable_bench [--sizes-mb 10,100,1000] [--fan-out N] [--runs N] "
                   "[--paused N] [--out FILE]\n");
      return 2;
    }
  }
  char tmpl[] = "/tmp/upstream-bench-durable-XXXXXX";
  std::string home = ::mkdtemp(tmpl);
  EngineOptions o = EngineOptions::from_environment();
  o.home = home;
  o.pool_size = 24ull << 30;
  // A warm-pool shape that the other measurements (default limits) do not match.
  PoolShape shape;
  shape.limits.memory = 1ull << 30;
  shape.size = 4;
  o.warm_pool = {shape};
  auto engine = Engine::open(o);
  Engine& e = *engine;
  json report = {{"date", format_time(now_ms())}, {"machine", "2 cores (this host)"}};

  // Baseline: a cold create and its first exec.
  {
    std::vector<double> v;
    for (int i = 0; i < std::max(5, runs / 5) + 2; i++) {
      int64_t t = mono_us();
      BoxRecord b = e.create_box({});
      run(e, b.id, "true");
      if (i >= 2) v.push_back(ms_since(t));
      e.remove_box(b.id, true);
    }
    Stats s = stats(v);
    report["cold_create_first_exec_ms"] = stats_json(s);
    std::printf("cold create -> first exec:         p50 %8.2f ms  p99 %8.2f ms\n", s.p50, s.p99);
  }

  // A box with a network (veth pair, addresses, route) against one without, create -> first exec,
  // interleaved so that both see the same machine.
  {
    std::vector<double> with, without, rm_with, rm_without;
    BoxSpec net;
    net.network = NetworkMode::allow_all;
    e.remove_box(e.create_box(net).id, true);  // the firewall is installed once per process
    for (int i = 0; i < std::max(5, runs / 5) + 2; i++) {
      for (bool networked : {false, true}) {
        int64_t t = mono_us();
        BoxRecord b = e.create_box(networked ? net : BoxSpec{});
        run(e, b.id, "true");
        if (i >= 2) (networked ? with : without).push_back(ms_since(t));
        t = mono_us();
        e.remove_box(b.id, true);
        if (i >= 2) (networked ? rm_with : rm_without).push_back(ms_since(t));
      }
    }
    Stats w = stats(with), wo = stats(without);
    report["network"] = {{"create_first_exec_with_network_ms", stats_json(w)},
                         {"create_first_exec_without_network_ms", stats_json(wo)},
                         {"network_setup_ms_p50", w.p50 - wo.p50},
                         {"remove_with_network_ms", stats_json(stats(rm_with))},
                         {"remove_without_network_ms", stats_json(stats(rm_without))}};
    std::printf(
        "create -> first exec with network: p50 %8.2f ms  (without: %.2f ms; network set-up "
        "%.2f ms); remove %.2f ms (without: %.2f ms)\n",
        w.p50, wo.p50, w.p50 - wo.p50, stats(rm_with).p50, stats(rm_without).p50);
    std::fflush(stdout);
  }

  // The warm pool: create (a hand-out) and first exec, against the cost of one exec alone in a
  // running box. The pool is refilled between samples, outside the timing.
  {
    BoxSpec warm;
    warm.limits.memory = shape.limits.memory;
    std::vector<double> both, create, exec_only;
    size_t claimed = 0;
    BoxRecord ref = e.create_box({});
    for (int i = 0; i < runs + 2; i++) {
      e.fill_pool();
      int64_t t = mono_us();
      BoxRecord b = e.create_box(warm);
      double c = ms_since(t);
      run(e, b.id, "true");
      double total = ms_since(t);
      claimed += b.state_reason == "created (from the warm pool)";
      t = mono_us();
      run(e, ref.id, "true");
      double x = ms_since(t);
      if (i >= 2) {
        both.push_back(total);
        create.push_back(c);
        exec_only.push_back(x);
      }
      e.remove_box(b.id, true);
    }
    e.remove_box(ref.id, true);
    e.drain_pool();
    Stats s = stats(both), sc = stats(create), sx = stats(exec_only);
    report["warm_pool"] = {{"create_first_exec_ms", stats_json(s)},
                           {"create_ms", stats_json(sc)},
                           {"one_exec_in_running_box_ms", stats_json(sx)},
                           {"handed_out_from_pool", claimed},
                           {"samples", runs + 2}};
    std::printf(
        "warm-pool create -> first exec:    p50 %8.2f ms  p99 %8.2f ms (create %.2f ms; one exec "
        "alone %.2f ms; %zu of %d from the pool)\n",
        s.p50, s.p99, sc.p50, sx.p50, claimed, runs + 2);
    std::fflush(stdout);
  }

  // Snapshot time against the size of the changes (files written by the box, 10 MB each).
  json snaps = json::array();
  for (int mb : sizes) {
    BoxRecord b = e.create_box({});
    run(e, b.id,
        "mkdir -p /home/user/data && i=0; while [ $i -lt " + std::to_string((mb + 9) / 10) +
            " ]; do head -c 10485760 /dev/urandom > /home/user/data/f$i; i=$((i+1)); done");
    // A process keeps writing during the capture.
    ExecSpec bg;
    bg.argv = {"/bin/sh", "-c", "while :; do date > /tmp/tick; sleep 0.01; done"};
    bg.background = true;
    e.start_exec(b.id, bg);
    SnapshotOptions so;
    so.name = "bench-" + std::to_string(mb);
    int64_t t = mono_us();
    SnapshotRecord s = e.snapshot_box(b.id, so);
    double total = ms_since(t);
    t = mono_us();
    BoxRecord child = e.create_box({.image = s.name});
    run(e, child.id, "test -f /home/user/data/f0");
    double child_ms = ms_since(t);
    snaps.push_back({{"changes_mb", mb},
                     {"layer_bytes", s.bytes},
                     {"snapshot_ms", total},
                     {"frozen_ms", static_cast<double>(s.frozen_us) / 1000.0},
                     {"box_from_it_first_exec_ms", child_ms}});
    std::printf(
        "snapshot of %5d MB of changes:     %8.1f ms total, box frozen %6.2f ms; box from it + "
        "exec %6.1f ms\n",
        mb, total, static_cast<double>(s.frozen_us) / 1000.0, child_ms);
    std::fflush(stdout);
    e.remove_box(child.id, true);
    e.remove_box(b.id, true);
    e.remove_snapshot(s.id);
  }
  report["snapshot"] = snaps;

  // Fan-out: N boxes from one snapshot, and the same number of plain boxes, in this run.
  {
    BoxRecord b = e.create_box({});
    run(e, b.id, "echo prepared > /home/user/state");
    SnapshotOptions so;
    so.name = "bench-fan";
    SnapshotRecord s = e.snapshot_box(b.id, so);
    BoxSpec spec;
    spec.image = s.name;
    int64_t t = mono_us();
    auto boxes = e.create_boxes(spec, static_cast<size_t>(fan_out));
    double fan_ms = ms_since(t);
    for (const auto& x : boxes) e.remove_box(x.id, true);
    t = mono_us();
    auto plain = e.create_boxes({}, static_cast<size_t>(fan_out));
    double plain_ms = ms_since(t);
    for (const auto& x : plain) e.remove_box(x.id, true);
    // Fork: snapshot of the running box and N boxes from it.
    t = mono_us();
    auto forks = e.fork_box(b.id, static_cast<size_t>(fan_out), {});
    double fork_ms = ms_since(t);
    for (const auto& x : forks) e.remove_box(x.id, true);
    report["fan_out"] = {{"boxes", fan_out},
                         {"from_snapshot_total_ms", fan_ms},
                         {"from_snapshot_per_box_ms", fan_ms / fan_out},
                         {"plain_boxes_total_ms", plain_ms},
                         {"fork_running_box_total_ms", fork_ms}};
    std::printf(
        "fan-out of %d boxes from a snapshot: %8.1f ms (%.2f ms/box); %d plain boxes "
        "%.1f ms; fork %.1f ms\n",
        fan_out, fan_ms, fan_ms / fan_out, fan_out, plain_ms, fork_ms);
    e.remove_box(b.id, true);
    e.remove_snapshot(s.id);
  }

  // Pause and resume of a box with a running process.
  {
    BoxRecord b = e.create_box({});
    ExecSpec bg;
    bg.argv = {"/bin/sh", "-c", "while :; do sleep 0.01; done"};
    bg.background = true;
    e.start_exec(b.id, bg);
    std::vector<double> p, r;
    for (int i = 0; i < runs + 2; i++) {
      int64_t t = mono_us();
      e.pause_box(b.id);
      double pm = ms_since(t);
      t = mono_us();
      e.resume_box(b.id);
      double rm = ms_since(t);
      if (i >= 2) {
        p.push_back(pm);
        r.push_back(rm);
      }
    }
    Stats ps = stats(p), rs = stats(r);
    report["pause_ms"] = stats_json(ps);
    report["resume_ms"] = stats_json(rs);
    std::printf("pause:                             p50 %8.2f ms  p99 %8.2f ms\n", ps.p50, ps.p99);
    std::printf("resume:                            p50 %8.2f ms  p99 %8.2f ms\n", rs.p50, rs.p99);
    e.remove_box(b.id, true);
  }

  // Host memory per paused box: boxes with a shell and a sleep in them, paused.
  {
    uint64_t before = mem_available();
    std::vector<BoxRecord> boxes;
    for (int i = 0; i < paused; i++) {
      BoxRecord b = e.create_box({});
      ExecSpec bg;
      bg.argv = {"/bin/sh", "-c", "sleep 100000"};
      bg.background = true;
      e.start_exec(b.id, bg);
      e.pause_box(b.id);
      boxes.push_back(b);
    }
    ::usleep(300000);
    uint64_t after = mem_available();
    uint64_t used = 0;
    for (const auto& b : boxes) used += e.usage(b.id).memory;
    double drop = before > after ? static_cast<double>(before - after) / paused / 1048576.0 : 0;
    double cg = static_cast<double>(used) / paused / 1048576.0;
    report["paused_box_memory"] = {{"boxes", paused},
                                   {"mem_available_drop_mib_per_box", drop},
                                   {"cgroup_memory_mib_per_box", cg}};
    std::printf(
        "host memory per paused box:        %8.2f MiB (MemAvailable drop), %.2f MiB "
        "(its cgroup), over %d boxes\n",
        drop, cg, paused);
    for (const auto& b : boxes) e.remove_box(b.id, true);
  }

  engine.reset();
  ::umount2((home + "/pool").c_str(), MNT_DETACH);
  remove_tree(home);
  std::string text = report.dump(2) + "\n";
  if (!out.empty()) write_file_atomic(out, text);
  std::printf("%s", text.c_str());
  return 0;
}
