// The context store: what every turn of a pipeline left behind, kept on the host so it outlives
// the box that made it.
//
//   $UPSTREAM_HOME/context/sessions/NAME/   a session: state.json (its box, the environment and
//                                           working directory the next turn starts with),
//                                           context.json (manifest of every turn), turn-K/...
//   $UPSTREAM_HOME/context/runs/RUN_ID/     a standalone run, laid out the same way (one turn)
//
// A turn directory holds document.md (the document as run), turn.json, steps/N/output.log (the
// whole output), steps/N/result.json and artifacts/. A turn is built in a hidden staging
// directory and renamed into place when it ends, so a listed turn is always complete.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "storage/layout.h"

namespace upstream::pipeline {

struct StepRecord {
  int index = 0;
  std::string name;
  std::string lang;
  std::string code;
  std::string status;  // ok | failed | timed out | skipped | not run | interrupted
  std::optional<int> exit_code;
  int signal = 0;
  int64_t started_at = 0;
  int64_t duration_ms = 0;
  uint64_t output_lines = 0;
  uint64_t output_bytes = 0;
  nlohmann::json result;     // what the step wrote to $UPSTREAM_OUTPUT (null: nothing)
  std::string result_error;  // why that file could not be used
};

struct ArtifactRecord {
  std::string path;  // relative to the turn's artifacts/ directory
  uint64_t size = 0;
};

struct TurnRecord {
  int turn = 0;
  std::string run_id;
  std::string session;   // empty for a standalone run
  std::string document;  // the document's path as given
  std::string box;       // the box id it ran in
  std::string status;    // succeeded | failed | interrupted
  int64_t started_at = 0;
  int64_t duration_ms = 0;
  std::vector<StepRecord> steps;
  std::vector<ArtifactRecord> artifacts;
};

nlohmann::json step_to_json(const StepRecord& s);
StepRecord step_from_json(const nlohmann::json& j);
nlohmann::json turn_to_json(const TurnRecord& t);
TurnRecord turn_from_json(const nlohmann::json& j);

// What the next turn of a session starts from.
struct SessionState {
  std::string name;
  std::string box_id;
  int64_t created_at = 0;
  int64_t updated_at = 0;
  std::vector<std::pair<std::string, std::string>> env;  // exported by earlier steps
  std::string cwd;
  // Whose session it is: a tenant's name, "" the operator's; unset in a state written before
  // sessions recorded it (recorded by its next turn).
  std::optional<std::string> tenant;
};

// A tenant's sessions are stored as TENANT_NAME (tenant names have no '_'); the operator names
// one as TENANT/NAME. Returns the stored name for either form (others unchanged).
std::string stored_session_name(const std::string& ref);
// The name a session is shown under: the one its tenant gave, or the stored name.
std::string shown_session_name(const SessionState& s);
// Whether a session is `tenant`'s ("" the operator's; an unrecorded one: by its name's prefix).
bool session_belongs_to(const SessionState& s, const std::string& tenant);

class ContextStore {
 public:
  // `root` is context/sessions or context/runs.
  explicit ContextStore(std::string root);
  static ContextStore sessions(const std::string& home) {
    return ContextStore(home + "/context/sessions");
  }
  static ContextStore runs(const std::string& home) { return ContextStore(home + "/context/runs"); }

  const std::string& root() const { return root_; }
  std::string dir(const std::string& name) const { return root_ + "/" + name; }
  std::string turn_dir(const std::string& name, int turn) const {
    return dir(name) + "/turn-" + std::to_string(turn);
  }

  bool exists(const std::string& name) const;
  std::vector<std::string> names() const;

  // Held for the whole of a turn: one turn of a session at a time. Throws Error(busy) naming
  // the session when another turn holds it.
  FileLock lock(const std::string& name);

  std::optional<SessionState> state(const std::string& name) const;
  void save_state(const SessionState& s);

  // Every published turn, oldest first.
  std::vector<TurnRecord> turns(const std::string& name) const;

  // Removes staging directories a crash left, then makes a fresh one for turn `turn`.
  std::string begin_turn(const std::string& name, int turn);
  // Writes turn.json into the staging directory, renames it into place and rewrites the
  // session's context.json.
  void publish_turn(const std::string& name, const std::string& staging, const TurnRecord& t);
  // The manifest a turn sees under $UPSTREAM_CONTEXT (paths relative to that directory).
  nlohmann::json manifest(const std::string& name) const;

  void remove(const std::string& name);

 private:
  std::string root_;
};

// Files below `dir`, as sorted relative paths with their sizes (symlinks and special files are
// listed with size 0; nothing is followed).
std::vector<ArtifactRecord> list_tree(const std::string& dir);

// Writes NAME/context.json and every NAME/turn-K/ of a session (or run) as a tar archive.
void export_context(const ContextStore& store, const std::string& name, int fd);

}  // namespace upstream::pipeline
