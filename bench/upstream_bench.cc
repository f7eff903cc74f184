// Measures upstream against the host's own process start and against peers (bwrap, runc,
// docker), all in one run on the same machine, and reports p50/p99 and ratios. Timings are
// noisy on shared machines; ratios within one run are what to compare.
//
//   upstream_bench [--runs N] [--idle N] [--upstream PATH] [--rootfs-tar PATH] [--no-peers]
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fcntl.h>
#include <sys/mount.h>
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/fd.h"
#include "common/proc.h"
#include "common/strings.h"
#include "common/time.h"
#include "engine/engine.h"
#include "pipeline/runner.h"
#include "storage/layout.h"

using namespace upstream;
extern char** environ;

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
  s.p99 = v[std::min(v.size() - 1, static_cast<size_t>(v.size() * 0.99))];
  for (double x : v) s.mean += x;
  s.mean /= static_cast<double>(v.size());
  return s;
}

Stats measure(int runs, const std::function<void()>& op, int warmup = 2) {
  for (int i = 0; i < warmup; i++) op();
  std::vector<double> v;
  for (int i = 0; i < runs; i++) {
    int64_t a = mono_us();
    op();
    v.push_back(static_cast<double>(mono_us() - a) / 1000.0);
  }
  return stats(v);
}

// Runs a command with output discarded; returns its exit status (or -1).
int spawn(const std::vector<std::string>& argv, const std::vector<std::string>& extra_env = {}) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  std::vector<std::string> env_store;
  for (char** e = environ; *e; e++) env_store.emplace_back(*e);
  for (const auto& e : extra_env) env_store.push_back(e);
  std::vector<char*> env;
  for (auto& e : env_store) env.push_back(e.data());
  env.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
  pid_t pid;
  int rc = posix_spawnp(&pid, args[0], &fa, nullptr, args.data(), env.data());
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) return -1;
  int st;
  waitpid(pid, &st, 0);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

bool have(const std::string& tool) { return spawn({"sh", "-c", "command -v " + tool}) == 0; }

uint64_t mem_available() {
  for (const auto& line : split(read_file("/proc/meminfo"), '\n'))
    if (starts_with(line, "MemAvailable:"))
      return std::strtoull(line.c_str() + 13, nullptr, 10) * 1024;
  return 0;
}

struct Row {
  std::string name;
  Stats s;
};
std::vector<Row> rows;
nlohmann::json report = nlohmann::json::object();

void add(const std::string& name, const Stats& s) {
  rows.push_back({name, s});
  report["latency_ms"][name] = {{"p50", s.p50}, {"p99", s.p99}, {"mean", s.mean}, {"runs", s.n}};
  std::printf("  %-46s %9.2f %9.2f %6zu\n", name.c_str(), s.p50, s.p99, s.n);
  std::fflush(stdout);
}

const Stats* find(const std::string& name) {
  for (const auto& r : rows)
    if (r.name == name) return &r.s;
  return nullptr;
}

}  // namespace

int main(int argc, char** argv) {
  int runs = 40, idle = 200;
  bool peers = true;
  std::string up = "build/upstream", rootfs_tar;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    if (a == "--runs" && i + 1 < argc)
      runs = std::atoi(argv[++i]);
    else if (a == "--idle" && i + 1 < argc)
      idle = std::atoi(argv[++i]);
    else if (a == "--upstream" && i + 1 < argc)
      up = argv[++i];
    else if (a == "--rootfs-tar" && i + 1 < argc)
      rootfs_tar = argv[++i];
    else if (a == "--no-peers")
      peers = false;
    else {
      std::fprintf(stderr,
                   "usage: upstream_bench [--runs N] [--idle N] [--upstream PATH] [--rootfs-tar "
                   "PATH] [--no-peers]\n");
      return 2;
    }
  }
  char tmpl[] = "/tmp/upstream-bench-XXXXXX";
  std::string home = ::mkdtemp(tmpl);
  std::string home_env = "UPSTREAM_HOME=" + home;
  EngineOptions o = EngineOptions::from_environment();
  o.home = home;
  o.pool_size = 16ull << 30;
  auto engine = Engine::open(o);
  report["runs"] = runs;
  report["date"] = format_time(now_ms());

  std::printf("upstream bench, %d runs per row (after 2 warm-up runs)\n\n", runs);
  std::printf("  %-46s %9s %9s %6s\n", "operation", "p50 ms", "p99 ms", "runs");

  // The host's own cost of starting and reaping `true`: the floor for everyone.
  add("host: spawn /bin/true", measure(runs, [] { spawn({"/bin/true"}); }));

  // Cold: a new sandbox runs `true` and is removed.
  add("upstream: cold create+true+rm (engine)", measure(runs, [&] {
        BoxRecord b = engine->create_box({});
        ExecSpec x;
        x.argv = {"true"};
        engine->start_exec(b.id, x)->wait({});
        engine->remove_box(b.id, true);
      }));
  add("upstream: cold create+true+rm (CLI)", measure(runs, [&] {
        spawn({up, "box", "run", "--rm", "--", "true"}, {home_env});
      }));

  // Warm: `true` in a box that is already running.
  BoxRecord warm = engine->create_box({});
  add("upstream: exec true in running box (engine)", measure(runs * 2, [&] {
        ExecSpec x;
        x.argv = {"true"};
        engine->start_exec(warm.id, x)->wait({});
      }));
  add("upstream: exec true in running box (CLI)", measure(runs, [&] {
        spawn({up, "box", "exec", warm.id, "--", "true"}, {home_env});
      }));

  // Pipelines: what `upstream run` adds per step beyond the command. A document of 100 `true`
  // steps (bash blocks) against 100 execs of `true`, and of `bash -c true`, in a running box.
  {
    const int steps = 100, rounds = std::max(3, runs / 8);
    std::string doc_path = home + "/bench-steps.md", report_path = home + "/bench-report.md";
    std::string doc = "# 100 steps\n";
    for (int i = 0; i < steps; i++) doc += "\n```bash\ntrue\n```\n";
    write_file_atomic(doc_path, doc);
    auto per_step = [&](const Stats& st) {
      Stats out = st;
      out.p50 /= steps;
      out.p99 /= steps;
      out.mean /= steps;
      return out;
    };
    add("exec true x100 in running box (engine), per exec", per_step(measure(rounds, [&] {
          for (int i = 0; i < steps; i++) {
            ExecSpec x;
            x.argv = {"true"};
            engine->start_exec(warm.id, x)->wait({});
          }
        })));
    add("exec bash -c true x100 in running box (engine), per exec", per_step(measure(rounds, [&] {
          for (int i = 0; i < steps; i++) {
            ExecSpec x;
            x.argv = {"bash", "--noprofile", "--norc", "-c", "true"};
            engine->start_exec(warm.id, x)->wait({});
          }
        })));
    pipeline::RunOptions ro;
    ro.path = doc_path;
    ro.output = report_path;
    ro.progress = "none";
    std::function<Engine&()> get = [&]() -> Engine& { return *engine; };
    add("upstream run: 100 true steps (engine), per step",
        per_step(measure(
            rounds,
            [&] {
              if (pipeline::run_document(get, ro) != 0)
                throw std::runtime_error("the benchmark pipeline failed");
            },
            1)));
    const Stats *run = find("upstream run: 100 true steps (engine), per step"),
                *ex = find("exec true x100 in running box (engine), per exec"),
                *cold = find("upstream: cold create+true+rm (engine)");
    if (run && ex && cold) {
      double overhead = run->p50 - ex->p50 - cold->p50 / steps;
      report["pipeline_overhead_ms_per_step"] = overhead;
      std::printf("  upstream run overhead per step beyond exec of the command: %.2f ms\n",
                  overhead);
    }
  }
  engine->remove_box(warm.id, true);

  // Peers, when installed.
  std::string bundle = home + "/peer";
  if (peers) {
    if (have("bwrap")) {
      add("bwrap: --unshare-all true", measure(runs, [] {
            spawn({"bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
                   "--unshare-all", "--die-with-parent", "/bin/true"});
          }));
    }
    bool rootfs = false;
    if (!rootfs_tar.empty() && (have("runc") || have("docker"))) {
      make_dirs(bundle + "/rootfs");
      rootfs = spawn({"tar", "-C", bundle + "/rootfs", "-xf", rootfs_tar}) == 0;
    }
    if (rootfs && have("runc")) {
      spawn({"sh", "-c",
             "cd " + bundle +
                 " && runc spec && sed -i 's/\"terminal\": true/\"terminal\": false/; "
                 "s/\"sh\"$/\"\\/bin\\/true\"/' config.json"});
      int i = 0;
      add("runc: run true (create+start+delete)", measure(runs, [&] {
            spawn({"runc", "run", "--bundle", bundle,
                   "upb-" + std::to_string(::getpid()) + "-" + std::to_string(i++)});
          }));
      std::string id = "upb-exec-" + std::to_string(::getpid());
      // A second bundle for a long-running container, sharing the rootfs by absolute path
      // (runc refuses a symlinked rootfs).
      spawn({"sh", "-c",
             "cd " + bundle + " && mkdir -p exec && sed " +
                 R"('s/"\/bin\/true"/"\/bin\/sleep", "3600"/; s|"path": "rootfs"|"path": ")" +
                 bundle + R"(/rootfs"|' config.json > exec/config.json)"});
      if (spawn({"runc", "run", "-d", "--bundle", bundle + "/exec", id}) == 0) {
        add("runc: exec true in running container", measure(runs, [&] {
              spawn({"runc", "exec", id, "/bin/true"});
            }));
        spawn({"runc", "delete", "-f", id});
      }
    }
    if (rootfs && have("docker") && spawn({"docker", "info"}) == 0) {
      std::string image = "upstream-bench:rootfs";
      if (spawn({"docker", "import", rootfs_tar, image}) == 0) {
        int n = std::max(5, runs / 4);  // docker is slow; fewer runs keep the bench short
        add("docker: run --rm --network none true",
            measure(
                n,
                [&] {
                  spawn({"docker", "run", "--rm", "--network", "none", image, "/bin/true"});
                },
                1));
        std::string name = "upstream-bench-" + std::to_string(::getpid());
        if (spawn({"docker", "run", "-d", "--network", "none", "--name", name, image, "/bin/sleep",
                   "3600"}) == 0) {
          add("docker: exec true in running container",
              measure(
                  n,
                  [&] {
                    spawn({"docker", "exec", name, "/bin/true"});
                  },
                  1));
          spawn({"docker", "rm", "-f", name});
        }
        spawn({"docker", "rmi", image});
      }
    }
  }

  // Idle boxes: memory per box, and many alive at once.
  std::printf("\n");
  uint64_t avail_before = mem_available();
  std::vector<BoxRecord> boxes;
  int64_t t0 = mono_ms();
  for (int i = 0; i < idle; i++) boxes.push_back(engine->create_box({}));
  int64_t create_ms = mono_ms() - t0;
  ::sync();
  uint64_t avail_after = mem_available();
  uint64_t rss = 0, pss = 0;
  for (const auto& b : boxes)
    if (auto m = process_memory(b.init_pid)) {
      rss += m->rss;
      pss += m->pss;
    }
  size_t running = 0;
  for (const auto& b : engine->list_boxes())
    if (b.state == "running") running++;
  int exec_ok = 0;
  for (int i = 0; i < idle; i += std::max(1, idle / 10)) {
    ExecSpec x;
    x.argv = {"true"};
    if (engine->start_exec(boxes[static_cast<size_t>(i)].id, x)->wait({}).exit_code == 0) exec_ok++;
  }
  double n = idle > 0 ? idle : 1;
  double rss_mib = static_cast<double>(rss) / n / 1048576.0,
         pss_mib = static_cast<double>(pss) / n / 1048576.0;
  double host_mib = avail_before > avail_after
                        ? static_cast<double>(avail_before - avail_after) / n / 1048576.0
                        : 0;
  std::printf(
      "idle boxes: %zu of %d running at once (created in %.1f s, %.1f ms each); execs checked: %d "
      "ok\n",
      running, idle, create_ms / 1000.0, static_cast<double>(create_ms) / n, exec_ok);
  std::printf(
      "host memory per idle box: init RSS %.2f MiB, init PSS %.2f MiB, MemAvailable drop %.2f MiB "
      "(includes kernel memory: namespaces, mounts, cgroups)\n",
      rss_mib, pss_mib, host_mib);
  report["idle"] = {
      {"boxes", idle},           {"running", running},      {"create_s", create_ms / 1000.0},
      {"init_rss_mib", rss_mib}, {"init_pss_mib", pss_mib}, {"mem_available_drop_mib", host_mib}};
  t0 = mono_ms();
  for (const auto& b : boxes) engine->remove_box(b.id, true);
  std::printf("removed %d boxes in %.1f s\n", idle, (mono_ms() - t0) / 1000.0);

  // Ratios: how much longer each peer takes for the same work, at p50.
  std::printf("\nratios (peer p50 / upstream p50, same run):\n");
  auto ratio = [&](const char* peer, const char* ours) {
    const Stats *p = find(peer), *u = find(ours);
    if (!p || !u || u->p50 <= 0) return;
    std::printf("  %-40s vs %-44s %6.1fx\n", peer, ours, p->p50 / u->p50);
    report["ratios"][std::string(peer) + " / " + ours] = p->p50 / u->p50;
  };
  ratio("bwrap: --unshare-all true", "upstream: cold create+true+rm (CLI)");
  ratio("runc: run true (create+start+delete)", "upstream: cold create+true+rm (CLI)");
  ratio("docker: run --rm --network none true", "upstream: cold create+true+rm (CLI)");
  ratio("runc: exec true in running container", "upstream: exec true in running box (CLI)");
  ratio("docker: exec true in running container", "upstream: exec true in running box (CLI)");
  const Stats *host = find("host: spawn /bin/true"),
              *ex = find("upstream: exec true in running box (engine)");
  if (host && ex)
    std::printf("  upstream exec overhead over a bare host spawn of /bin/true: %.2f ms (%.2fx)\n",
                ex->p50 - host->p50, ex->p50 / host->p50);

  engine.reset();
  ::umount2((home + "/pool").c_str(), MNT_DETACH);
  remove_tree(home);
  std::string out = std::string("bench/results-") + std::to_string(now_ms() / 1000) + ".json";
  if (const char* dir = std::getenv("UPSTREAM_BENCH_OUT")) out = dir;
  write_file_atomic(out, report.dump(2) + "\n", 0644);
  std::printf("\nresults written to %s\n", out.c_str());
  return 0;
}
