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
                    {"paused", s.paused}});
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
}

}  // namespace upstream::cli
