// `upstream run`, `upstream session ...` and `upstream context ...`.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>

#include <cstdlib>
#include <iostream>

#include "cli/cli.h"
#include "common/error.h"
#include "common/fd.h"
#include "common/strings.h"
#include "common/time.h"
#include "pipeline/context.h"
#include "pipeline/runner.h"

namespace upstream::cli {

using nlohmann::json;

namespace {

std::string steps_text(const pipeline::TurnRecord& t) {
  int ok = 0;
  for (const auto& s : t.steps) ok += s.status == "ok";
  return std::to_string(ok) + "/" + std::to_string(t.steps.size());
}

std::string step_result_text(const pipeline::StepRecord& s) {
  if (s.status == "ok" || s.status == "failed") {
    if (s.exit_code)
      return (s.status == "ok" ? "ok" : "failed") + std::string(", exit ") +
             std::to_string(*s.exit_code);
    if (s.signal) return "failed, signal " + std::to_string(s.signal);
  }
  return s.status;
}

}  // namespace

namespace {

void add_run_command(CLI::App& app, Context& ctx) {
  auto* c = app.add_subcommand(
      "run", "Run a markdown document's code blocks as steps and write the results back");
  c->footer(
      "Examples:\n"
      "  upstream run analysis.md\n"
      "  upstream run --session research day2.md   # builds on the session's earlier turns\n"
      "  upstream run -o - analysis.md > report.md");
  auto opts = std::make_shared<pipeline::RunOptions>();
  auto session = std::make_shared<std::string>();
  auto output = std::make_shared<std::string>();
  auto head = std::make_shared<int>(-1), tail = std::make_shared<int>(-1);
  c->add_option("document", opts->path,
                "The markdown document ('-': read it from standard input and write the report "
                "to standard output)")
      ->required();
  c->add_option("-s,--session", *session,
                "Run as the next turn of this session (overrides the front matter)");
  c->add_flag("--keep", opts->keep, "Keep the box of a run without a session");
  c->add_flag("-v,--verbose", opts->verbose, "Stream each step's output live");
  c->add_option("-o,--output", *output,
                "Write the report to this file instead of into the document ('-': standard "
                "output, with progress on standard error)");
  c->add_flag("--dry-run", opts->dry_run, "List the steps; run nothing");
  c->add_option("--head", *head, "Output lines kept at the start of a long output (default 40)");
  c->add_option("--tail", *tail, "Output lines kept at its end (default 40)");
  auto labels = std::make_shared<std::vector<std::string>>();
  c->add_option("--label,-l", *labels, "Label key=value for the box the run creates (repeatable)")
      ->allow_extra_args(false);
  c->add_option("--progress", opts->progress,
                "auto (spinner on a terminal), plain, none, or json (one event per line: "
                "step_start, output with -v, step_end, progress, summary)")
      ->check(CLI::IsMember({"auto", "plain", "none", "json"}));
  auto network = std::make_shared<std::string>();
  auto egress = std::make_shared<EgressOpts>();
  c->add_option("--network", *network,
                "The box's network, over the front matter's: none, allow-all or custom (with "
                "--allow-domain/--allow-cidr); a session's box keeps it");
  add_egress_options(c, *egress, false);
  c->callback([&ctx, opts, session, output, head, tail, labels, network, egress] {
    if (!session->empty()) opts->session = *session;
    if (!output->empty()) opts->output = *output;
    if (*head >= 0) opts->head_lines = *head;
    if (*tail >= 0) opts->tail_lines = *tail;
    int code;
    try {
      opts->labels = parse_labels(*labels);
      opts->network = network_options(*network, *egress);
      code = ctx.backend().run_document(*opts);
    } catch (const Error& e) {
      std::cerr << "upstream: error: " << e.what() << std::endl;
      throw ExitCode{e.code() == Errc::invalid_argument || e.code() == Errc::not_found
                         ? pipeline::kRunBadDocument
                         : pipeline::kRunEngineError};
    }
    if (code != 0) throw ExitCode{code};
  });
}

void add_sess_ls_command(CLI::App* sess, Context& ctx) {
  auto* c = sess->add_subcommand("ls", "List sessions");
  c->callback([&ctx] {
    json out = json::array();
    std::vector<std::vector<std::string>> rows;
    int64_t now = now_ms();
    auto sessions = ctx.backend().list_sessions();
    // A TENANT column when a tenant's sessions are listed (its own names; TENANT/NAME names one).
    bool tenants = std::any_of(sessions.begin(), sessions.end(),
                               [](const SessionSummary& x) { return !x.tenant.empty(); });
    for (const auto& x : sessions) {
      out.push_back({{"name", x.name},
                     {"tenant", x.tenant.empty() ? json(nullptr) : json(x.tenant)},
                     {"box", x.box_id},
                     {"turns", x.turns},
                     {"last_status", x.last_status},
                     {"updated_at", x.updated_at ? format_time(x.updated_at) : ""}});
      std::vector<std::string> row{x.name};
      if (tenants) row.push_back(x.tenant.empty() ? "-" : x.tenant);
      row.insert(row.end(), {std::to_string(x.turns), x.last_status.empty() ? "-" : x.last_status,
                             x.updated_at ? format_ago(x.updated_at, now) : "-", x.box_id});
      rows.push_back(std::move(row));
    }
    if (ctx.json) {
      print_json(out);
    } else if (tenants) {
      print_table({"SESSION", "TENANT", "TURNS", "LAST", "UPDATED", "BOX"}, rows);
    } else {
      print_table({"SESSION", "TURNS", "LAST", "UPDATED", "BOX"}, rows);
    }
  });
}

void add_sess_show_command(CLI::App* sess, Context& ctx) {
  auto* c = sess->add_subcommand("show", "Show a session: its box and its turns");
  auto name = std::make_shared<std::string>();
  c->add_option("name", *name, "Session")->required();
  c->callback([&ctx, name] {
    SessionView v = ctx.backend().get_session(*name);
    std::string box_state = "-";
    if (!v.box_id.empty()) {
      try {
        box_state = ctx.backend().get_box(v.box_id).state;
      } catch (const Error&) {
        box_state = "gone";
      }
    }
    const auto& turns = v.turns;
    if (ctx.json) {
      json t = json::array();
      for (const auto& turn : turns) t.push_back(pipeline::turn_to_json(turn));
      json env = json::object();
      for (const auto& [k, val] : v.env) env[k] = val;
      print_json({{"name", v.name},
                  {"box", v.box_id},
                  {"box_state", box_state},
                  {"cwd", v.cwd},
                  {"env", env},
                  {"context", v.context},
                  {"turns", t}});
      return;
    }
    std::cout << "session:  " << v.name << "\n"
              << "box:      " << (!v.box_id.empty() ? v.box_id + " (" + box_state + ")" : "-")
              << "\n"
              << "cwd:      " << (!v.cwd.empty() ? v.cwd : "-") << "\n"
              << "context:  " << v.context << "\n";
    if (!v.env.empty()) {
      std::vector<std::string> names;
      for (const auto& [k, val] : v.env) names.push_back(k);
      std::cout << "env:      " << join(names, " ") << "\n";
    }
    std::cout << "\n";
    std::vector<std::vector<std::string>> rows;
    for (const auto& t : turns)
      rows.push_back({std::to_string(t.turn), t.run_id, t.status, steps_text(t),
                      std::to_string(t.artifacts.size()), format_time(t.started_at),
                      format_duration_ms(static_cast<uint64_t>(t.duration_ms)), t.document});
    print_table(
        {"TURN", "RUN", "STATUS", "STEPS OK", "ARTIFACTS", "STARTED", "DURATION", "DOCUMENT"},
        rows);
  });
}

void add_sess_rm_command(CLI::App* sess, Context& ctx) {
  auto* c = sess->add_subcommand("rm", "Remove a session: its box and its context");
  auto names = std::make_shared<std::vector<std::string>>();
  c->add_option("name", *names, "Sessions")->required();
  c->callback([&ctx, names] {
    // Every name checked before anything is removed.
    for (const auto& n : *names) ctx.backend().get_session(n);
    for (const auto& n : *names) {
      ctx.backend().remove_session(n);
      std::cout << n << std::endl;
    }
  });
}

void add_context_show_command(CLI::App* context, Context& ctx) {
  auto* c = context->add_subcommand("show", "Show a session's context (or a standalone run's)");
  auto name = std::make_shared<std::string>();
  auto turn = std::make_shared<int>(0);
  c->add_option("name", *name, "Session name or run id")->required();
  c->add_option("--turn", *turn, "Only this turn");
  c->callback([&ctx, name, turn] {
    SessionView v = ctx.backend().get_session(*name);
    if (*turn == 0) {
      if (ctx.json) {
        print_json(ctx.backend().session_manifest(*name));
        return;
      }
      for (const auto& t : v.turns) {
        std::cout << "turn " << t.turn << "  " << t.status << "  run " << t.run_id << "  "
                  << format_time(t.started_at) << "  " << t.document << "\n";
        for (const auto& s : t.steps)
          std::cout << "  step " << s.index << ": " << s.name << "  (" << step_result_text(s) << ")"
                    << (s.result.is_null() ? "" : "  result: " + s.result.dump()) << "\n";
        for (const auto& a : t.artifacts)
          std::cout << "  artifact " << a.path << "  " << format_bytes(a.size) << "\n";
      }
      std::cout << std::flush;
      return;
    }
    for (const auto& t : v.turns) {
      if (t.turn != *turn) continue;
      if (ctx.json) {
        print_json(pipeline::turn_to_json(t));
        return;
      }
      std::string dir = v.context + "/turn-" + std::to_string(t.turn);
      std::cout << "turn:      " << t.turn << "\nrun:       " << t.run_id
                << "\nstatus:    " << t.status << "\nstarted:   " << format_time(t.started_at)
                << "\nduration:  " << format_duration_ms(static_cast<uint64_t>(t.duration_ms))
                << "\ndocument:  " << t.document << "\nstored in: " << dir << "\n\n";
      std::vector<std::vector<std::string>> rows;
      for (const auto& s : t.steps)
        rows.push_back({std::to_string(s.index), s.name, step_result_text(s),
                        format_duration_ms(static_cast<uint64_t>(s.duration_ms)),
                        std::to_string(s.output_lines),
                        s.result.is_null() ? "" : s.result.dump().substr(0, 60)});
      print_table({"STEP", "NAME", "RESULT", "DURATION", "LINES", "OUTPUT JSON"}, rows);
      if (!t.artifacts.empty()) {
        std::cout << "\n";
        std::vector<std::vector<std::string>> arows;
        for (const auto& a : t.artifacts) arows.push_back({a.path, format_bytes(a.size)});
        print_table({"ARTIFACT", "SIZE"}, arows);
      }
      return;
    }
    throw Error(Errc::not_found, "'" + v.name + "' has no turn " + std::to_string(*turn));
  });
}

void add_context_export_command(CLI::App* context, Context& ctx) {
  auto* c =
      context->add_subcommand("export", "Write a session's context (every turn) as a tar archive");
  auto name = std::make_shared<std::string>();
  auto out = std::make_shared<std::string>();
  c->add_option("name", *name, "Session name or run id")->required();
  c->add_option("-o,--output", *out, "The tar file to write ('-': standard output)")->required();
  c->callback([&ctx, name, out] {
    ctx.backend().get_session(*name);  // a clear error before anything is written
    auto write_tar = [&ctx, name](int fd) { ctx.backend().export_session(*name, fd); };
    if (*out == "-") {
      if (::isatty(1))
        throw Error(Errc::invalid_argument, "refusing to write a tar archive to a terminal");
      write_tar(1);
      return;
    }
    write_file_atomic_with(*out, 0644, write_tar);
  });
}

}  // namespace

void add_pipeline_commands(CLI::App& app, Context& ctx) {
  add_run_command(app, ctx);

  CLI::App* sess =
      app.add_subcommand("session", "Sessions: turns of `upstream run` that build on each other")
          ->require_subcommand(1);
  add_sess_ls_command(sess, ctx);
  add_sess_show_command(sess, ctx);
  add_sess_rm_command(sess, ctx);

  CLI::App* context =
      app.add_subcommand("context", "What the turns of a session left: results and artifacts")
          ->require_subcommand(1);
  add_context_show_command(context, ctx);
  add_context_export_command(context, ctx);
}

}  // namespace upstream::cli
