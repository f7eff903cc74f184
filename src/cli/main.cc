// upstream: the command-line front of the engine.
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <iostream>
#include <memory>

#include "cli/cli.h"
#include "common/error.h"
#include "common/strings.h"
#include "netd/netd.h"

using namespace upstream;

namespace {

// `netd` (hidden), `version` and `help`.
void add_general_commands(CLI::App& app, cli::Context& ctx) {
  // The host's network daemon (see netd.h), started by the engine when a box gets a network.
  auto* netd_cmd = app.add_subcommand("netd", "Run the host network daemon (started on demand)");
  netd_cmd->group("");
  auto take_over = std::make_shared<bool>(false);
  netd_cmd->add_flag("--take-over", *take_over,
                     "Take over from a running netd of an older protocol");
  netd_cmd->callback(
      [take_over] { std::exit(upstream::netd::serve(upstream::netd::run_dir(), *take_over)); });

  app.add_subcommand("version", "Print the version")->callback([&] {
    if (ctx.json)
      cli::print_json({{"version", UPSTREAM_VERSION}});
    else
      std::cout << "upstream " << UPSTREAM_VERSION << std::endl;
  });
  auto* help = app.add_subcommand("help", "Show help for a command");
  auto topic = std::make_shared<std::vector<std::string>>();
  help->add_option("command", *topic, "Command, e.g. box exec");
  help->callback([&app, topic] {
    CLI::App* target = &app;
    // App::help() would describe the selected subcommand (this one); the formatter describes
    // exactly the command asked for.
    auto page = [](CLI::App* a, const std::string& name) {
      return a->get_formatter()->make_help(a, name, CLI::AppFormatMode::Normal);
    };
    if (topic->empty()) {
      std::cout << page(&app, "upstream");
      return;
    }
    for (const auto& t : *topic) {
      CLI::App* next = nullptr;
      try {
        next = target->get_subcommand(t);
      } catch (const CLI::OptionNotFound&) {
      }
      if (!next) {
        std::cerr << "upstream: error: no command '" << t << "'" << std::endl;
        throw cli::ExitCode{cli::kExitError};
      }
      target = next;
    }
    std::cout << page(target, "upstream " + join(*topic, " "));
  });
}

// exec and run report their command's exit code; their own failures use 125.
bool exec_like(CLI::App& app) {
  for (auto* sub : app.get_subcommands())
    if (sub->get_name() == "box")
      for (auto* s : sub->get_subcommands())
        if (s->get_name() == "exec" || s->get_name() == "run") return true;
  return false;
}

// `box exec [options] [BOX] -- COMMAND...` and `box run [options] -- COMMAND...`: whatever
// follows `--` is the command, verbatim (kept in ctx); the option parser sees only what comes
// before, which is returned.
std::vector<char*> split_at_dashes(int argc, char** argv, cli::Context& ctx) {
  std::vector<char*> head(argv, argv + argc);
  for (int i = 1; i + 1 < argc; i++) {
    if (std::string(argv[i]) != "box") continue;
    std::string sub = argv[i + 1];
    if (sub != "exec" && sub != "run") break;
    for (int j = i + 2; j < argc; j++)
      if (std::string(argv[j]) == "--") {
        ctx.dashes = true;
        ctx.after_dashes.assign(argv + j + 1, argv + argc);
        head.assign(argv, argv + j);
        break;
      }
    break;
  }
  return head;
}

}  // namespace

int main(int argc, char** argv) {
  // Output to a closed pipe (`upstream box ls | head`) ends us quietly, with an error from write.
  ::signal(SIGPIPE, SIG_IGN);

  CLI::App app{"upstream: sandboxes for AI agents that remember", "upstream"};
  app.formatter(cli::make_formatter());  // before the commands: they take their parent's
  app.require_subcommand(1);
  app.fallthrough();
  cli::Context ctx;
  app.add_flag("--json", ctx.json, "Print JSON (listings, inspect, info)");

  std::unique_ptr<Engine> engine;
  ctx.engine = [&]() -> Engine& {
    if (!engine) {
      EngineOptions o = EngineOptions::from_environment();
      // Long waits are said on a terminal (scripts and pipes get only what they asked for).
      if (::isatty(2)) o.notice = [](const std::string& m) { std::cerr << m << std::endl; };
      engine = Engine::open(o);
    }
    return *engine;
  };
  // With UPSTREAM_URL set, box commands go to that server instead of the state directory.
  const char* url = std::getenv("UPSTREAM_URL");
  ctx.remote = url && *url;
  std::unique_ptr<cli::Backend> backend;
  ctx.backend = [&]() -> cli::Backend& {
    if (!backend) {
      const char* key = std::getenv("UPSTREAM_API_KEY");
      backend = ctx.remote ? cli::make_remote_backend(url, key ? key : "")
                           : cli::make_local_backend(ctx.engine);
    }
    return *backend;
  };

  add_general_commands(app, ctx);
  cli::add_box_commands(app, ctx);
  cli::add_system_commands(app, ctx);
  cli::add_pipeline_commands(app, ctx);
  cli::add_snapshot_commands(app, ctx);
  cli::add_server_commands(app, ctx);

  std::vector<char*> head = split_at_dashes(argc, argv, ctx);

  try {
    app.parse(static_cast<int>(head.size()), head.data());
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    return cli::report_parse_error(app, e, std::vector<std::string>(head.begin(), head.end()),
                                   exec_like(app) ? cli::kExitExecError : cli::kExitError);
  } catch (const cli::ExitCode& e) {
    return e.code;
  } catch (const Error& e) {
    std::cerr << "upstream: error: " << e.what() << std::endl;
    return exec_like(app) ? cli::kExitExecError : cli::kExitError;
  } catch (const std::exception& e) {
    std::cerr << "upstream: error: " << e.what() << std::endl;
    return exec_like(app) ? cli::kExitExecError : cli::kExitError;
  }
  return 0;
}
