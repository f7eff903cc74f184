// What the box commands of the CLI act on: the engine in this process (the state directory), or
// an upstream server over HTTP when UPSTREAM_URL is set. Both give the same records, so the
// commands print the same output and exit with the same codes either way.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "pipeline/context.h"
#include "pipeline/runner.h"

namespace upstream::cli {

// A session of `upstream run` (or a standalone run, by its id) as the commands show it.
struct SessionView {
  std::string name, box_id, cwd;
  std::string context;  // where its turns are kept: a directory, or the server's URL for them
  std::vector<std::pair<std::string, std::string>> env;
  std::vector<pipeline::TurnRecord> turns;
};

struct SessionSummary {
  std::string name;    // as its tenant named it
  std::string tenant;  // "" the operator's (or unrecorded)
  std::string box_id, last_status;
  size_t turns = 0;
  int64_t updated_at = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual bool remote() const = 0;

  virtual BoxRecord create_box(const BoxSpec& spec) = 0;
  virtual BoxRecord get_box(const std::string& ref) = 0;
  virtual std::vector<BoxRecord> list_boxes(const store::BoxFilter& filter) = 0;
  virtual BoxRecord start_box(const std::string& ref) = 0;
  virtual BoxRecord stop_box(const std::string& ref, int64_t grace_ms) = 0;
  virtual void remove_box(const std::string& ref, bool force) = 0;
  virtual BoxRecord pause_box(const std::string& ref) = 0;
  virtual BoxRecord resume_box(const std::string& ref) = 0;
  virtual BoxRecord archive_box(const std::string& ref) = 0;
  // A box with its usage and its state transitions.
  virtual BoxRecord inspect(const std::string& ref, BoxUsage& usage,
                            std::vector<BoxEvent>& events) = 0;
  virtual BoxUsage usage(const std::string& ref) = 0;

  virtual std::unique_ptr<ExecSession> start_exec(const std::string& ref, const ExecSpec& spec) = 0;
  virtual std::optional<ExecRecord> get_exec(const std::string& ref, uint64_t seq) = 0;
  virtual std::vector<ExecRecord> list_execs(const std::string& ref, bool running_only,
                                             size_t limit) = 0;
  virtual void kill_exec(const std::string& ref, uint64_t seq, int signal) = 0;
  virtual std::vector<Engine::ExecProcesses> exec_processes(const std::string& ref) = 0;
  // Copies an exec's output from `offset` on to out_fd (its log, or the tail kept in the
  // database when there is no log); returns the bytes copied.
  virtual uint64_t copy_log(const std::string& ref, uint64_t seq, Stream which, uint64_t offset,
                            int out_fd) = 0;

  // `box cp`: box paths are absolute or relative to the box's working directory.
  virtual void copy_out(const std::string& ref, const std::string& box_path,
                        const std::string& host_path, const std::string& user) = 0;
  virtual void copy_in(const std::string& ref, const std::string& host_path,
                       const std::string& box_path, const std::string& user) = 0;
  virtual void download_tar(const std::string& ref, const std::string& box_path, int out_fd,
                            const std::string& user) = 0;
  virtual void upload_tar(const std::string& ref, const std::string& box_dir, int in_fd,
                          const std::string& user) = 0;

  virtual SystemInfo system_info() = 0;
  virtual Engine::UsageReport usage_report(const Engine::UsageQuery& q) = 0;
  virtual BoxRecord set_network(const std::string& ref, NetworkMode mode, const Egress& egress,
                                bool keep_headers) = 0;
  virtual nlohmann::json net_stats(const std::string& ref) = 0;
  virtual Engine::Exposure expose(const std::string& ref, int port, const std::string& auth) = 0;
  virtual std::vector<Engine::Exposure> exposures(const std::string& ref) = 0;
  virtual void unexpose(const std::string& ref, const std::string& which) = 0;

  // Snapshots and images.
  virtual std::vector<BoxRecord> create_boxes(const BoxSpec& spec, size_t count) = 0;
  virtual std::vector<BoxRecord> fork_box(const std::string& ref, size_t count,
                                          const BoxSpec& overrides) = 0;
  virtual SnapshotRecord snapshot_box(const std::string& ref, const SnapshotOptions& opts) = 0;
  virtual SnapshotRecord get_snapshot(const std::string& ref) = 0;
  virtual std::vector<SnapshotRecord> list_snapshots(const std::string& kind) = 0;
  virtual void remove_snapshot(const std::string& ref) = 0;
  virtual void export_snapshot(const std::string& ref, int out_fd) = 0;
  virtual SnapshotRecord import_snapshot(int in_fd, const std::string& name,
                                         const std::string& base) = 0;

  // `upstream run`: the exit code of the run (the report written back here either way).
  virtual int run_document(const pipeline::RunOptions& opts) = 0;
  // Sessions; a session or run that does not exist is not_found.
  virtual std::vector<SessionSummary> list_sessions() = 0;
  virtual SessionView get_session(const std::string& name) = 0;
  virtual nlohmann::json session_manifest(const std::string& name) = 0;
  virtual void remove_session(const std::string& name) = 0;
  // The context of every turn as a tar archive, written to fd.
  virtual void export_session(const std::string& name, int fd) = 0;
};

std::unique_ptr<Backend> make_local_backend(const std::function<Engine&()>& engine);
// url: http://HOST:PORT; key may be empty.
std::unique_ptr<Backend> make_remote_backend(const std::string& url, const std::string& key);

}  // namespace upstream::cli
