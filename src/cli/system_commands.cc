#include <cstdio>
#include <iostream>

#include "cli/cli.h"
#include "common/strings.h"
#include "common/time.h"
#include "engine/wire.h"

namespace upstream::cli {

using nlohmann::json;

namespace {

void add_sys_info_command(CLI::App* sys, Context& ctx) {
  auto* c = sys->add_subcommand("info", "Show where state lives and what the kernel provides");
  c->callback([&ctx] {
    SystemInfo s = ctx.backend().system_info();
    if (ctx.json) {
      print_json({{"version", s.version},
                  {"home", s.home},
                  {"storage", s.storage},
                  {"cgroups", s.cgroups},
                  {"proc_view", s.proc_view},
                  {"kernel", s.kernel},
                  {"instance", s.instance},
                  {"host_image", s.host_image},
                  {"boxes", s.boxes},
                  {"running", s.running},
                  {"paused", s.paused},
                  {"pooled", s.pooled}});
      return;
    }
    std::cout << "version:     " << s.version << "\n"
              << "state:       " << s.home << "\n"
              << "storage:     " << s.storage << "\n"
              << "cgroups:     " << s.cgroups << "\n"
              << "/proc view:  " << s.proc_view << "\n"
              << "kernel:      " << s.kernel << "\n"
              << "host image:  " << s.host_image << "\n"
              << "boxes:       " << s.boxes << " (" << s.running << " running, " << s.paused
              << " paused)\n";
    if (!ctx.backend().remote())
      std::cout << "warm pool:   " << s.pooled
                << " ready (configuration: " << ctx.engine().options().config_path << ")\n";
  });
}

void add_sys_reconcile_command(CLI::App* sys, Context& ctx) {
  auto* c = sys->add_subcommand("reconcile",
                                "Clean up after crashed processes (also done on every start)");
  c->callback([&ctx] {
    ctx.require_local("system reconcile");
    ctx.engine().reconcile();
  });
}

void add_sys_rebuild_firewall_command(CLI::App* sys, Context& ctx) {
  auto* c = sys->add_subcommand(
      "rebuild-firewall",
      "Build the host firewall (nftables table inet upstream) again with every box's rules, in "
      "one transaction (after nftables was flushed, say)");
  c->callback([&ctx] {
    ctx.require_local("system rebuild-firewall");
    ctx.engine().rebuild_firewall();
  });
}

void add_sys_refresh_host_image_command(CLI::App* sys, Context& ctx) {
  auto* c = sys->add_subcommand(
      "refresh-host-image", "Rebuild the host image's mask now (after installing host packages)");
  c->callback([&ctx] {
    ctx.require_local("system refresh-host-image");
    ctx.engine().refresh_host_image();
  });
}

void add_usage_command(CLI::App& app, Context& ctx) {
  auto* c = app.add_subcommand(
      "usage",
      "Metered usage over a period, by tenant, box, snapshot or label, with costs if "
      "the configuration has prices");
  auto since = std::make_shared<std::string>("30d");
  auto until = std::make_shared<std::string>("now");
  auto by = std::make_shared<std::string>("tenant");
  auto labels = std::make_shared<std::vector<std::string>>();
  c->add_option("--since", *since,
                "Start: 24h, 7d, 2026-12-01 or 2026-12-01T10:00:00Z (default 30d)");
  c->add_option("--until", *until, "End, in the same forms (default now)");
  c->add_option("--by", *by, "Group by tenant (default), box, snapshot, all, or label:KEY");
  c->add_option("-l,--label", *labels, "Only what carries this label key=value (repeatable)");
  c->callback([&ctx, since, until, by, labels] {
    int64_t now = now_ms();
    Engine::UsageQuery q;
    q.since = parse_when(*since, now, "--since");
    q.until = parse_when(*until, now, "--until");
    q.by = *by;
    for (const auto& l : *labels) {
      auto [k, v] = parse_label(l);
      q.labels[k] = v;
    }
    Engine::UsageReport r = ctx.backend().usage_report(q);
    if (ctx.json) {
      print_json(usage_report_json(r));
      return;
    }
    bool priced = r.prices.any();
    std::cout << "usage from " << format_time(r.since) << " to " << format_time(r.until) << "\n";
    std::printf("%-28s %6s %6s %12s %12s %12s %12s%s\n", "GROUP", "BOXES", "SNAPS", "CPU (s)",
                "RUNNING (s)", "DISK GB-MO", "SNAP GB-MO",
                priced ? ("  COST (" + r.prices.currency + ")  WALL-CLOCK COST").c_str() : "");
    auto line = [&](const Engine::UsageGroup& g, const std::string& key) {
      std::printf("%-28s %6zu %6zu %12.2f %12.1f %12.6f %12.6f", key.c_str(), g.boxes, g.snapshots,
                  g.cpu_s, g.running_s, g.box_gb_months, g.snapshot_gb_months);
      if (priced) {
        std::printf("  %12.6f", g.cost.value_or(0));
        if (g.wall_clock_cost) std::printf("  %15.6f", *g.wall_clock_cost);
      }
      std::printf("\n");
    };
    for (const auto& g : r.groups) line(g, g.key.empty() ? "-" : g.key);
    line(r.total, "total");
  });
}

void add_pool_ls_command(CLI::App* pool, Context& ctx) {
  auto* c = pool->add_subcommand("ls", "Show each configured shape and how many boxes are ready");
  c->callback([&ctx] {
    ctx.require_local("pool ls");
    auto states = ctx.engine().pool_status();
    if (ctx.json) {
      json out = json::array();
      for (const auto& s : states) {
        json j = {{"image", s.shape.image},
                  {"limits", limits_to_json(s.shape.limits)},
                  {"size", s.shape.size},
                  {"ready", s.ready}};
        if (!s.error.empty()) j["error"] = s.error;
        out.push_back(j);
      }
      print_json(out);
      return;
    }
    if (states.empty()) {
      std::cout << "no warm pool configured (add \"warm_pool\" to "
                << ctx.engine().options().config_path << ")\n";
      return;
    }
    std::cout << "IMAGE                LIMITS                                   READY/SIZE\n";
    for (const auto& s : states) {
      std::string lim = limits_text(s.shape.limits);
      std::printf("%-20s %-40s %zu/%zu%s\n", s.shape.image.c_str(), lim.c_str(), s.ready,
                  s.shape.size, s.error.empty() ? "" : ("  (" + s.error + ")").c_str());
    }
  });
}

void add_pool_fill_command(CLI::App* pool, Context& ctx) {
  auto* c = pool->add_subcommand(
      "fill", "Create the boxes the pool lacks now (`upstream serve` does this by itself)");
  c->callback([&ctx] {
    ctx.require_local("pool fill");
    for (const auto& line : ctx.engine().fill_pool()) std::cout << line << "\n";
  });
}

void add_pool_drain_command(CLI::App* pool, Context& ctx) {
  auto* c = pool->add_subcommand("drain", "Remove every box waiting in the pool");
  c->callback([&ctx] {
    ctx.require_local("pool drain");
    std::cout << "removed " << ctx.engine().drain_pool() << " pooled boxes\n";
  });
}

}  // namespace

void add_system_commands(CLI::App& app, Context& ctx) {
  CLI::App* sys = app.add_subcommand("system", "The installation: state, storage, cgroups")
                      ->require_subcommand(1);
  add_sys_info_command(sys, ctx);
  add_sys_reconcile_command(sys, ctx);
  add_sys_rebuild_firewall_command(sys, ctx);
  add_sys_refresh_host_image_command(sys, ctx);

  add_usage_command(app, ctx);

  // The warm pool is the installation's: its shapes come from the configuration file, and
  // `upstream serve` refills it in the background.
  CLI::App* pool =
      app.add_subcommand("pool", "The warm pool of ready boxes (shapes from the configuration)")
          ->require_subcommand(1);
  add_pool_ls_command(pool, ctx);
  add_pool_fill_command(pool, ctx);
  add_pool_drain_command(pool, ctx);
}

}  // namespace upstream::cli
