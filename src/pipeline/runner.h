// Running a markdown document as one turn: every step in one box, in order, with files, the
// working directory and exported variables carried from step to step (and, in a session, from
// turn to turn); results written back into the document and recorded in the context store.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>

#include "engine/engine.h"
#include "pipeline/document.h"

namespace upstream::pipeline {

// Exit codes of `upstream run`.
constexpr int kRunOk = 0;
constexpr int kRunStepFailed = 1;
constexpr int kRunBadDocument = 2;
constexpr int kRunEngineError = 125;
constexpr int kRunInterrupted = 130;  // 128 + the signal: 130 for Ctrl-C, 143 for SIGTERM

struct RunOptions {
  std::string path;                    // the document; "-" reads it from standard input
  std::optional<std::string> session;  // overrides the front matter's
  bool keep = false;                   // keep a standalone run's box
  bool verbose = false;                // stream each step's output live
  std::optional<std::string> output;   // write the report here, not into the document
  bool dry_run = false;
  std::optional<int> head_lines, tail_lines;
  // Progress display: "auto" (a spinner on a terminal, plain lines otherwise), "plain", "none",
  // "json" (NDJSON events, as POST /v1/pipelines streams them).
  std::string progress = "auto";
  std::map<std::string, std::string> labels;  // put on the box when a turn creates one
  std::optional<RunNetwork> network;          // overrides the front matter's

  // The report goes to standard output for `-o -`, and for a document read from standard input
  // without -o; progress then goes to standard error, so standard output is the report alone.
  // The network the run's box gets: --network, else the front matter's (nullopt: none, or what
  // a session's box has).
  std::optional<RunNetwork> network_for(const Document& doc) const {
    return network ? network : doc.meta.network;
  }
  bool report_to_stdout() const { return output ? *output == "-" : path == "-"; }
};

// Where in the box a turn's files are.
inline constexpr const char* kBoxRunDir = "/var/tmp/upstream/run";
inline constexpr const char* kBoxArtifactsDir = "/var/tmp/upstream/artifacts";
inline constexpr const char* kBoxContextDir = "/var/tmp/upstream/context";

// Reads, checks and runs the document; prints progress to stdout and problems to stderr.
// The engine is opened only when something runs. Returns the exit code for `upstream run`. Problems
// with the document are reported before anything runs (exit 2) and leave the file untouched.
int run_document(const std::function<Engine&()>& engine, const RunOptions& opts);

// Reads a document file ("-": standard input, named <stdin> in messages) with clear errors for
// what is not one (missing, a directory, too large, binary), then parses it.
Document load_document(const std::string& path);

// Writes a run's report: to standard output when opts.report_to_stdout() (returning ""), else
// atomically to opts.output when that is set, else into the document
// (keeping its permissions) unless the document changed on disk during the run or the report
// would not parse back the same, in which case beside it as STEM.RUN_ID.EXT. Returns where it
// went; `diverted` says the document had changed. Local and remote runs both write through it.
std::string write_report(const RunOptions& opts, const Document& doc, const std::string& report,
                         const std::string& run_id, bool& diverted);

// Removes a session: its box (if it still exists) and its context, under the session's lock (so
// not while a turn runs).
void remove_session(Engine& engine, const std::string& name);

// The environment changes a bash step's exit trap reported (see runner.cc), applied to `env`;
// returns the working directory it ended in (empty when the report is unusable).
std::string apply_step_state(std::string_view state,
                             std::vector<std::pair<std::string, std::string>>& env);

}  // namespace upstream::pipeline
