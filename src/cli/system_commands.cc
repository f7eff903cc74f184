#include <iostream>

#include "cli/cli.h"

namespace upstream::cli {

using nlohmann::json;

void add_system_commands(CLI::App& app, Context& ctx) {
  CLI::App* sys = app.add_subcommand("system", "The installation: state, storage, cgroups")
                      ->require_subcommand(1);
  {
    auto* c = sys->add_subcommand("info", "Show where state lives and what the kernel provides");
    c->callback([&ctx] {
      SystemInfo s = ctx.backend().system_info();
      if (ctx.json) {
        print_json({{"version", s.version},
                    {"home", s.home},
                    {"storage", s.storage},
                    {"cgroups", s.cgroups},
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
                << "kernel:      " << s.kernel << "\n"
                << "host image:  " << s.host_image << "\n"
                << "boxes:       " << s.boxes << " (" << s.running << " running, " << s.paused
                << " paused)\n";
      if (!ctx.backend().remote())
        std::cout << "warm pool:   " << s.pooled
                  << " ready (configuration: " << ctx.engine().options().config_path << ")\n";
    });
  }
  {
    auto* c = sys->add_subcommand("reconcile",
                                  "Clean up after crashed processes (also done on every start)");
    c->callback([&ctx] {
      ctx.require_local("system reconcile");
      ctx.engine().reconcile();
    });
  }
  {
    auto* c = sys->add_subcommand(
        "refresh-host-image", "Rebuild the host image's mask now (after installing host packages)");
    c->callback([&ctx] {
      ctx.require_local("system refresh-host-image");
      ctx.engine().refresh_host_image();
    });
  }

  // The warm pool is the installation's: its shapes come from the configuration file, and
  // `upstream serve` refills it in the background.
  CLI::App* pool =
      app.add_subcommand("pool", "The warm pool of ready boxes (shapes from the configuration)")
          ->require_subcommand(1);
  {
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
        std::string lim = limits_to_json(s.shape.limits).dump();
        std::printf("%-20s %-40s %zu/%zu%s\n", s.shape.image.c_str(), lim.c_str(), s.ready,
                    s.shape.size, s.error.empty() ? "" : ("  (" + s.error + ")").c_str());
      }
    });
  }
  {
    auto* c = pool->add_subcommand(
        "fill", "Create the boxes the pool lacks now (`upstream serve` does this by itself)");
    c->callback([&ctx] {
      ctx.require_local("pool fill");
      for (const auto& line : ctx.engine().fill_pool()) std::cout << line << "\n";
    });
  }
  {
    auto* c = pool->add_subcommand("drain", "Remove every box waiting in the pool");
    c->callback([&ctx] {
      ctx.require_local("pool drain");
      std::cout << "removed " << ctx.engine().drain_pool() << " pooled boxes\n";
    });
  }
}

}  // namespace upstream::cli
