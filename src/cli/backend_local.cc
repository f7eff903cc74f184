#include <fcntl.h>
#include <unistd.h>

#include "cli/backend.h"
#include "common/error.h"
#include "common/fd.h"
#include "common/strings.h"

namespace upstream::cli {

namespace {

using pipeline::ContextStore;

class LocalBackend : public Backend {
 public:
  explicit LocalBackend(std::function<Engine&()> engine) : engine_(std::move(engine)) {}
  bool remote() const override { return false; }

  BoxRecord create_box(const BoxSpec& spec) override { return e().create_box(spec); }
  BoxRecord get_box(const std::string& ref) override { return e().get_box(ref); }
  std::vector<BoxRecord> list_boxes(const store::BoxFilter& f) override {
    return e().list_boxes(f);
  }
  BoxRecord start_box(const std::string& ref) override { return e().start_box(ref); }
  BoxRecord pause_box(const std::string& ref) override { return e().pause_box(ref); }
  std::vector<BoxRecord> create_boxes(const BoxSpec& spec, size_t count) override {
    return e().create_boxes(spec, count);
  }
  std::vector<BoxRecord> fork_box(const std::string& ref, size_t count,
                                  const BoxSpec& overrides) override {
    return e().fork_box(ref, count, overrides);
  }
  SnapshotRecord snapshot_box(const std::string& ref, const SnapshotOptions& o) override {
    return e().snapshot_box(ref, o);
  }
  SnapshotRecord get_snapshot(const std::string& ref) override { return e().get_snapshot(ref); }
  BoxRecord set_network(const std::string& ref, NetworkMode mode, const Egress& egress,
                        bool keep_headers) override {
    return e().set_network(ref, mode, egress, keep_headers);
  }
  nlohmann::json net_stats(const std::string& ref) override { return e().net_stats(ref); }
  Engine::Exposure expose(const std::string& ref, int port, const std::string& auth) override {
    return e().expose(ref, port, auth);
  }
  std::vector<Engine::Exposure> exposures(const std::string& ref) override {
    return e().exposures(ref);
  }
  void unexpose(const std::string& ref, const std::string& which) override {
    e().unexpose(ref, which);
  }
  Engine::UsageReport usage_report(const Engine::UsageQuery& q) override {
    return e().usage_report(q);
  }
  std::vector<SnapshotRecord> list_snapshots(const std::string& kind) override {
    return e().list_snapshots(kind);
  }
  void remove_snapshot(const std::string& ref) override { e().remove_snapshot(ref); }
  void export_snapshot(const std::string& ref, int out_fd) override {
    e().export_snapshot(ref, out_fd);
  }
  SnapshotRecord import_snapshot(int in_fd, const std::string& name,
                                 const std::string& base) override {
    return e().import_snapshot(in_fd, name, {}, base);
  }
  BoxRecord resume_box(const std::string& ref) override { return e().resume_box(ref); }
  BoxRecord archive_box(const std::string& ref) override { return e().archive_box(ref); }
  BoxRecord stop_box(const std::string& ref, int64_t grace_ms) override {
    return e().stop_box(ref, grace_ms);
  }
  void remove_box(const std::string& ref, bool force) override { e().remove_box(ref, force); }
  BoxRecord inspect(const std::string& ref, BoxUsage& usage,
                    std::vector<BoxEvent>& events) override {
    BoxRecord b = e().get_box(ref);
    usage = e().usage(b.id);
    events = e().events(b.id);
    return b;
  }
  BoxUsage usage(const std::string& ref) override { return e().usage(ref); }

  std::unique_ptr<ExecSession> start_exec(const std::string& ref, const ExecSpec& spec) override {
    return e().start_exec(ref, spec);
  }
  std::optional<ExecRecord> get_exec(const std::string& ref, uint64_t seq) override {
    return e().get_exec(ref, seq);
  }
  std::vector<ExecRecord> list_execs(const std::string& ref, bool running_only,
                                     size_t limit) override {
    return e().list_execs(ref, running_only, limit);
  }
  void kill_exec(const std::string& ref, uint64_t seq, int signal) override {
    e().kill_exec(ref, seq, signal);
  }
  std::vector<Engine::ExecProcesses> exec_processes(const std::string& ref) override {
    return e().exec_processes(ref);
  }
  uint64_t copy_log(const std::string& ref, uint64_t seq, Stream which, uint64_t offset,
                    int out_fd) override {
    auto [out, err] = e().exec_log_paths(ref, seq);
    UniqueFd fd(::open((which == Stream::stdout_ ? out : err).c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) {
      auto rec = e().get_exec(ref, seq);
      std::string tail =
          rec ? (which == Stream::stdout_ ? rec->stdout_tail : rec->stderr_tail) : "";
      if (offset >= tail.size()) return 0;
      write_all(out_fd, tail.data() + offset, tail.size() - offset);
      return tail.size() - offset;
    }
    char buf[65536];
    uint64_t total = 0;
    for (;;) {
      ssize_t n = ::pread(fd.get(), buf, sizeof buf, static_cast<off_t>(offset + total));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) throw_sys("read the exec's log");
      if (n == 0) return total;
      write_all(out_fd, buf, static_cast<size_t>(n));
      total += static_cast<uint64_t>(n);
    }
  }

  void copy_out(const std::string& ref, const std::string& box_path, const std::string& host_path,
                const std::string& user) override {
    BoxRecord b = e().get_box(ref);
    e().files(b.id, user)->copy_out(upstream::box_path(box_path, b.spec.workdir), host_path);
  }
  void copy_in(const std::string& ref, const std::string& host_path, const std::string& box_path,
               const std::string& user) override {
    BoxRecord b = e().get_box(ref);
    e().files(b.id, user)->copy_in(host_path, upstream::box_path(box_path, b.spec.workdir));
  }
  void download_tar(const std::string& ref, const std::string& box_path, int out_fd,
                    const std::string& user) override {
    BoxRecord b = e().get_box(ref);
    e().files(b.id, user)->download_tar(upstream::box_path(box_path, b.spec.workdir), out_fd);
  }
  void upload_tar(const std::string& ref, const std::string& box_dir, int in_fd,
                  const std::string& user) override {
    BoxRecord b = e().get_box(ref);
    e().files(b.id, user)->upload_tar(upstream::box_path(box_dir, b.spec.workdir), in_fd);
  }

  SystemInfo system_info() override { return e().system_info(); }

  int run_document(const pipeline::RunOptions& opts) override {
    return pipeline::run_document(engine_, opts);
  }
  std::vector<SessionSummary> list_sessions() override {
    std::vector<SessionSummary> out;
    ContextStore store = ContextStore::sessions(e().options().home);
    for (const auto& name : store.names()) {
      pipeline::SessionState st = store.state(name).value_or(pipeline::SessionState{});
      st.name = name;
      auto turns = store.turns(name);
      out.push_back({pipeline::shown_session_name(st), st.tenant.value_or(""), st.box_id,
                     turns.empty() ? "" : turns.back().status, turns.size(), st.updated_at});
    }
    return out;
  }
  SessionView get_session(const std::string& name) override {
    Found f = find(name);
    SessionView v;
    v.name = name;
    v.context = f.store.dir(f.name);
    if (auto st = f.store.state(f.name)) {
      v.box_id = st->box_id;
      v.cwd = st->cwd;
      v.env = st->env;
    }
    v.turns = f.store.turns(f.name);
    return v;
  }
  nlohmann::json session_manifest(const std::string& name) override {
    Found f = find(name);
    return f.store.manifest(f.name);
  }
  void remove_session(const std::string& name) override {
    std::string stored = pipeline::stored_session_name(name);
    if (!ContextStore::sessions(e().options().home).exists(stored))
      throw Error(Errc::not_found, "no session '" + name + "'");
    pipeline::remove_session(e(), stored);
  }
  void export_session(const std::string& name, int fd) override {
    Found f = find(name);
    pipeline::export_context(f.store, f.name, fd);
  }

 private:
  // A session by name, or else a standalone run by its id.
  struct Found {
    ContextStore store;
    std::string name;
  };
  // A tenant's session is named TENANT/NAME here.
  Found find(const std::string& name) {
    std::string stored = pipeline::stored_session_name(name);
    if (!valid_box_name(stored))
      throw Error(Errc::invalid_argument, "invalid session name '" + name + "'");
    const std::string& home = e().options().home;
    ContextStore sessions = ContextStore::sessions(home);
    if (sessions.exists(stored)) return {sessions, stored};
    ContextStore runs = ContextStore::runs(home);
    if (!runs.turns(name).empty()) return {runs, name};
    throw Error(Errc::not_found, "no session or run '" + name + "' (see `upstream session ls`)");
  }

  Engine& e() { return engine_(); }
  std::function<Engine&()> engine_;
};

}  // namespace

std::unique_ptr<Backend> make_local_backend(const std::function<Engine&()>& engine) {
  return std::make_unique<LocalBackend>(engine);
}

}  // namespace upstream::cli
