// The command-line front: parsing, output, and the commands. It only translates between the
// terminal and the engine.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/backend.h"
#include "engine/engine.h"
#include "engine/wire.h"
#include "pipeline/document.h"

namespace upstream::cli {

// Exit codes: 0 success; 1 an upstream error; for exec and run, the command's own code, or 125
// when upstream itself failed (as docker does).
constexpr int kExitError = 1;
constexpr int kExitExecError = 125;

struct Context {
  std::function<Engine&()> engine;    // opened on first use
  std::function<Backend&()> backend;  // the engine, or the server named by UPSTREAM_URL
  bool remote = false;                // UPSTREAM_URL is set
  // Throws for commands that need the local state directory when UPSTREAM_URL is set.
  void require_local(const std::string& what) const;
  bool json = false;
  // For `box exec` and `box run`: the words after the first standalone `--`, which are the
  // command (for exec, possibly preceded by the box). They never reach the option parser.
  bool dashes = false;
  std::vector<std::string> after_dashes;
};

// Thrown by a command to exit with a given code after it has printed what it needed to.
struct ExitCode {
  int code;
};

void add_box_commands(CLI::App& app, Context& ctx);
void add_system_commands(CLI::App& app, Context& ctx);
void add_pipeline_commands(CLI::App& app, Context& ctx);
void add_server_commands(CLI::App& app, Context& ctx);
void add_snapshot_commands(CLI::App& app, Context& ctx);

// Parsing helpers (throw invalid_argument with the offending text).
Limits parse_limits(const std::string& cpus, const std::string& memory, const std::string& pids,
                    const std::string& disk);
std::vector<std::string> parse_env_list(const std::vector<std::string>& items);
std::map<std::string, std::string> parse_labels(const std::vector<std::string>& items);
using upstream::parse_signal;

// The egress policy and the headers to inject, as options of box create and box network (and,
// without headers, of run and image build).
struct EgressOpts {
  std::vector<std::string> allow_domains, allow_cidrs, deny_cidrs, headers;
};
void add_egress_options(CLI::App* c, EgressOpts& o, bool headers = true);
// Throws invalid_argument for a malformed --header.
Egress egress_from(const EgressOpts& o);
// --network MODE with --allow-*/--deny-cidr (no headers) of run and image build, checked as a box
// spec's; nullopt when neither was given.
std::optional<pipeline::RunNetwork> network_options(const std::string& mode, const EgressOpts& o);

// Help pages and parse errors (usage.cc). The formatter shows positionals in capitals and a
// command's usage as set_usage gave it ("[OPTIONS] BOX -- COMMAND [ARG...]"). A parse error is
// said in the user's words, with the closest command or flag; returns the exit code (a group
// command given alone prints its help and exits 0).
std::shared_ptr<CLI::FormatterBase> make_formatter();
void set_usage(CLI::App* c, const std::string& args);
int report_parse_error(const CLI::App& app, const CLI::ParseError& e,
                       const std::vector<std::string>& args, int error_code);

// Output.
using upstream::box_json;
using upstream::exec_json;
std::string limits_text(const Limits& l);
void print_table(const std::vector<std::string>& headers,
                 const std::vector<std::vector<std::string>>& rows);
void print_json(const nlohmann::json& j);

// A status line for a long operation on a terminal's stderr: from half a second in, `status()`
// is shown and redrawn in place five times a second, with the time taken so far; the line is
// cleared when the object goes. Nothing at all when stderr is not a terminal (scripts and pipes
// get only what they asked for).
class TerminalProgress {
 public:
  explicit TerminalProgress(std::function<std::string()> status);
  ~TerminalProgress();
  TerminalProgress(const TerminalProgress&) = delete;
  TerminalProgress& operator=(const TerminalProgress&) = delete;
  // Milliseconds since it began.
  uint64_t elapsed_ms() const;
  // Whether stderr is a terminal: the one-line results of long commands are said there.
  static bool on_terminal();

 private:
  struct State;
  std::shared_ptr<State> state_;
};

}  // namespace upstream::cli
