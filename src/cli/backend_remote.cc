// The CLI over HTTP: every box command as calls to an upstream server (UPSTREAM_URL).
#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <utility>

#include <cstdlib>
#include <iostream>
#include <limits>

#include "api/routes.h"
#include "cli/backend.h"
#include "client/http.h"
#include "common/error.h"
#include "common/fd.h"
#include "common/strings.h"
#include "common/time.h"
#include "common/url.h"
#include "engine/host_tree.h"
#include "engine/wire.h"
#include "model/egress.h"
#include "pipeline/runner.h"

namespace upstream::cli {

namespace {

using nlohmann::json;

// One path segment, or a query value.
std::string seg(const std::string& s) { return url_encode(s); }

using client::query;

UniqueFd temp_file() {
  UniqueFd fd(::open("/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600));
  if (!fd) throw_sys("create a temporary file in /tmp");
  return fd;
}

class RemoteExec : public ExecSession {
 public:
  RemoteExec(client::Client& http, std::string box, std::unique_ptr<client::Reply> conn,
             bool stdin_stream)
      : http_(http), box_(std::move(box)), conn_(std::move(conn)), stdin_stream_(stdin_stream) {
    // The first event says which exec this is.
    for (;;) {
      auto ev = conn_->next_event();
      if (!ev) throw Error(Errc::unavailable, "the server ended the exec's stream early");
      if (ev->value("type", "") == "start") {
        seq_ = ev->value("exec", uint64_t{0});
        pid_ = ev->value("pid", 0);
        box_id_ = ev->value("box_id", box_);
        break;
      }
    }
  }
  RemoteExec(client::Client& http, const json& rec) : http_(http) {
    bg_ = exec_from_json(rec);
    seq_ = bg_.seq;
    pid_ = bg_.pid;
    box_id_ = box_ = bg_.box_id;
    background_ = true;
  }

  uint64_t seq() const override { return seq_; }
  pid_t pid() const override { return pid_; }
  std::string box_id() const override { return box_id_; }
  bool finished() const override { return false; }
  int stdin_fd() const override { return -1; }
  int stdout_fd() const override { return -1; }
  int stderr_fd() const override { return -1; }
  int tty_fd() const override { return -1; }
  void close_stdin() override { send_stdin("", true); }
  void resize(uint16_t, uint16_t) override {}

  void signal(int sig) override {
    try {
      http_.post("/v1/boxes/" + seg(box_id_) + "/execs/" + std::to_string(seq_) + "/kill",
                 {{"signal", sig}});
    } catch (const Error&) {
      // it may have ended meanwhile
    }
  }

  ExecRecord wait(const Sink& sink, int stdin_source, int event_fd,
                  const std::function<void()>& on_event) override {
    if (background_) return bg_;
    bool stdin_open = stdin_source >= 0 && stdin_stream_;
    int sock = conn_->fd();
    for (;;) {
      // Whole events already received come first.
      while (auto ev = conn_->buffered_event()) {
        if (auto rec = handle(*ev, sink)) return *rec;
      }
      std::vector<pollfd> fds{{sock, POLLIN, 0}};
      if (stdin_open) fds.push_back({stdin_source, POLLIN, 0});
      if (event_fd >= 0) fds.push_back({event_fd, POLLIN, 0});
      if (::poll(fds.data(), fds.size(), -1) < 0) {
        if (errno == EINTR) continue;
        throw_sys("poll");
      }
      for (const auto& p : fds) {
        if (!p.revents) continue;
        if (p.fd == event_fd) {
          if (on_event) on_event();
        } else if (p.fd == stdin_source) {
          char buf[65536];
          ssize_t n = ::read(stdin_source, buf, sizeof buf);
          if (n > 0) {
            send_stdin(std::string(buf, static_cast<size_t>(n)), false);
          } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
            stdin_open = false;
            send_stdin("", true);
          }
        } else if (p.fd == sock) {
          if (!conn_->receive())
            throw Error(Errc::unavailable, "the server ended the exec's stream early");
        }
      }
    }
  }

 private:
  std::optional<ExecRecord> handle(const json& ev, const Sink& sink) {
    std::string type = ev.value("type", "");
    if (type == "stdout" || type == "stderr") {
      std::string data;
      if (ev.contains("data_b64")) {
        auto raw = base64_decode(ev["data_b64"].get<std::string>());
        if (!raw) throw Error(Errc::internal, "malformed base64 output from the server");
        data = std::move(*raw);
      } else {
        data = ev.value("data", std::string());
      }
      if (sink) sink(type == "stdout" ? Stream::stdout_ : Stream::stderr_, data);
    } else if (type == "exit") {
      return exec_from_json(ev);
    }
    return std::nullopt;
  }

  void send_stdin(const std::string& data, bool eof) {
    if (!stdin_stream_ || stdin_closed_) return;
    try {
      auto c = http_.open("POST",
                          "/v1/boxes/" + seg(box_id_) + "/execs/" + std::to_string(seq_) +
                              "/stdin" + (eof ? "?eof=true" : ""),
                          data, "application/octet-stream");
      c->read_all();
    } catch (const Error&) {
      stdin_closed_ = true;  // the command stopped reading (or ended): like a closed pipe
    }
    if (eof) stdin_closed_ = true;
  }

  client::Client& http_;
  std::string box_, box_id_;
  std::unique_ptr<client::Reply> conn_;
  bool stdin_stream_ = false, stdin_closed_ = false, background_ = false;
  uint64_t seq_ = 0;
  pid_t pid_ = 0;
  ExecRecord bg_;
};

// `upstream run` through the server: the document is sent, progress printed as it comes, and
// the report written back here.
int run_remote(client::Client& http, const pipeline::RunOptions& opts) {
  if (!opts.labels.empty() || opts.keep || opts.head_lines || opts.tail_lines)
    throw Error(Errc::invalid_argument,
                "--label, --keep, --head and --tail are not available over HTTP yet");
  const std::string& path = opts.path;
  // Checked here as it would be locally: a bad document exits 2 with the file untouched.
  pipeline::Document doc = pipeline::load_document(path);
  if (doc.steps.empty())
    throw Error(Errc::invalid_argument, path + ": has no steps (fenced code blocks marked " +
                                            pipeline::kStepLanguages + ")");
  const std::string& source = doc.source;
  // Progress goes where the report does not.
  std::ostream& say = opts.report_to_stdout() ? std::cerr : std::cout;
  std::string base = path.substr(path.find_last_of('/') + 1), name;
  for (char ch : base)
    name += std::isalnum(static_cast<unsigned char>(ch)) || ch == '.' || ch == '-' ? ch : '_';
  if (name.empty() || name[0] == '.' || path == "-")
    name = path == "-" ? "stdin.md" : "document.md";
  json body = {{"document", source}, {"name", name}, {"stream", true}, {"verbose", opts.verbose}};
  if (opts.session) body["session"] = *opts.session;
  if (opts.network) {
    body["network"] = opts.network->mode;
    body["egress"] = egress::to_json(opts.network->egress, false);
  }
  auto c = http.open("POST", "/v1/pipelines", body.dump(), "application/json");
  std::optional<json> end;
  bool hold = false;
  const bool as_json = opts.progress == "json", quiet = opts.progress == "none";
  // A line in the view asked for: the human line, or the event as it came.
  auto show = [&](const json& ev, const std::string& line) {
    if (as_json)
      say << ev.dump(-1, ' ', false, json::error_handler_t::replace) << std::endl;
    else if (!quiet)
      say << line << std::endl;
  };
  std::vector<std::pair<json, std::string>> held;
  while (!end) {
    auto ev = c->next_event();
    if (!ev) break;
    std::string type = ev->value("type", "");
    std::string line = ev->value("line", "");
    if (type == "end") {
      end = std::move(ev);
    } else if (type == "error") {
      std::cerr << line << std::endl;
    } else if (type == "output" && !as_json) {
      std::string data = ev->value("data", "");
      bool out = ev->value("stream", "") == "stdout" && !opts.report_to_stdout();
      write_all(out ? 1 : 2, data.data(), data.size());
    } else if (type == "progress" &&
               (starts_with(line, "Report written to ") ||
                line.find(" changed while the run went on") != std::string::npos)) {
      // Where the report went on the server is not where it goes here: that line is said
      // below, in its place, once the report is written here.
      hold = true;
    } else if (ev->contains("line") || as_json) {
      if (hold)
        held.emplace_back(*ev, line);
      else
        show(*ev, line);
    }
  }
  if (!end) throw Error(Errc::unavailable, "the server ended the run's stream early");
  int code = end->value("exit_code", pipeline::kRunEngineError);
  std::string report = end->value("report", "");
  if (!report.empty()) {
    // Written as a local run writes it.
    pipeline::RunOptions where;
    auto id = end->find("run_id");  // null when the run never started
    std::string run_id = id != end->end() && id->is_string() ? id->get<std::string>() : "run";
    where.path = path;
    where.output = opts.output;
    bool diverted = false;
    std::string target = pipeline::write_report(where, doc, report, run_id, diverted);
    std::string line =
        diverted
            ? path + " changed while the run went on; it was left alone and the report is in " +
                  target
        : target.empty() ? std::string()
                         : "Report written to " + target;
    if (!line.empty()) show({{"type", "progress"}, {"line", line}}, line);
  }
  for (const auto& [ev, line] : held) show(ev, line);
  return code;
}

class RemoteBackend : public Backend {
 public:
  RemoteBackend(const std::string& url, const std::string& key) : http_(url, key) {}
  bool remote() const override { return true; }

  BoxRecord create_box(const BoxSpec& s) override {
    return box_from_json(http_.post("/v1/boxes", spec_body(s)));
  }
  std::vector<BoxRecord> create_boxes(const BoxSpec& s, size_t count) override {
    json body = spec_body(s);
    body["count"] = count;
    std::vector<BoxRecord> out;
    json reply = http_.post("/v1/boxes", body);  // kept: the loop below refers into it
    for (const auto& b : reply.at("boxes")) out.push_back(box_from_json(b));
    return out;
  }
  std::vector<BoxRecord> fork_box(const std::string& ref, size_t count, const BoxSpec& s) override {
    json body = spec_body(s);
    body.erase("image");
    body.erase("network");
    body.erase("egress");
    body.erase("policy");
    body["count"] = count;
    std::vector<BoxRecord> out;
    json reply = http_.post(box(ref) + "/fork", body);
    for (const auto& b : reply.at("boxes")) out.push_back(box_from_json(b));
    return out;
  }
  SnapshotRecord snapshot_box(const std::string& ref, const SnapshotOptions& o) override {
    json body = json::object();
    if (!o.name.empty()) body["name"] = o.name;
    if (!o.labels.empty()) body["labels"] = o.labels;
    if (o.kind != "snapshot") body["kind"] = o.kind;
    return snapshot_from_json(http_.post(box(ref) + "/snapshot", body));
  }
  SnapshotRecord get_snapshot(const std::string& ref) override {
    return snapshot_from_json(http_.get("/v1/snapshots/" + seg(ref)));
  }
  BoxRecord set_network(const std::string& ref, NetworkMode mode, const Egress& egress,
                        bool keep_headers) override {
    json body = egress::to_json(egress, true);
    body["mode"] = mode;
    if (keep_headers) body.erase("headers");
    return box_from_json(http_.post(box(ref) + "/network", body));
  }
  json net_stats(const std::string& ref) override { return http_.get(box(ref) + "/traffic"); }
  Engine::Exposure expose(const std::string& ref, int port, const std::string& auth) override {
    return exposure_from_json(http_.post(box(ref) + "/expose", {{"port", port}, {"auth", auth}}));
  }
  std::vector<Engine::Exposure> exposures(const std::string& ref) override {
    std::vector<Engine::Exposure> out;
    std::vector<std::string> refs;
    if (ref.empty())
      for (const auto& b : list_boxes({})) refs.push_back(b.id);
    else
      refs.push_back(ref);
    for (const auto& r : refs) {
      json reply = http_.get(box(r) + "/expose");
      for (const auto& e : reply.at("exposures")) out.push_back(exposure_from_json(e));
    }
    return out;
  }
  void unexpose(const std::string& ref, const std::string& which) override {
    http_.del(box(ref) + "/expose/" + seg(which));
  }
  Engine::UsageReport usage_report(const Engine::UsageQuery& q) override {
    std::string path = "/v1/usage?since=" + seg(format_time(q.since)) +
                       "&until=" + seg(format_time(q.until)) + "&by=" + seg(q.by);
    for (const auto& [k, v] : q.labels) path += "&label=" + seg(k + "=" + v);
    return usage_report_from_json(http_.get(path));
  }
  std::vector<SnapshotRecord> list_snapshots(const std::string& kind) override {
    std::vector<SnapshotRecord> out;
    json reply = http_.get("/v1/snapshots" + (kind.empty() ? "" : "?kind=" + seg(kind)));
    for (const auto& s : reply.at("snapshots")) out.push_back(snapshot_from_json(s));
    return out;
  }
  void remove_snapshot(const std::string& ref) override { http_.del("/v1/snapshots/" + seg(ref)); }
  void export_snapshot(const std::string& ref, int out_fd) override {
    auto c = http_.open("GET", "/v1/snapshots/" + seg(ref) + "/export");
    c->copy_to(out_fd);
  }
  SnapshotRecord import_snapshot(int in_fd, const std::string& name,
                                 const std::string& base) override {
    // The body must have a length: a file is sent as it is, a pipe is spooled first.
    struct stat st;
    UniqueFd tmp;
    int fd = in_fd;
    if (::fstat(in_fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      tmp = temp_file();
      char buf[65536];
      for (;;) {
        ssize_t n = ::read(in_fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) throw_sys("read the snapshot export");
        if (n == 0) break;
        write_all(tmp.get(), buf, static_cast<size_t>(n));
      }
      ::lseek(tmp.get(), 0, SEEK_SET);
      fd = tmp.get();
    }
    auto c = http_.open("PUT", "/v1/snapshots/import" + query({{"name", name}, {"base", base}}), "",
                        "application/zstd", fd);
    std::string text = c->read_all();
    return snapshot_from_json(json::parse(text));
  }

  // A create's body: the spec in its one encoding (model/box.h), secrets included (they go to
  // the server, which keeps them).
  json spec_body(const BoxSpec& s) { return spec_to_json(s, Secrets::kept); }
  BoxRecord get_box(const std::string& ref) override { return box_from_json(http_.get(box(ref))); }
  std::vector<BoxRecord> list_boxes(const store::BoxFilter& f) override {
    std::vector<BoxRecord> out;
    std::string after;
    for (int page = 0; page < 100000; page++) {
      std::string q = "/v1/boxes?limit=1000";
      for (const auto& [k, v] : f.labels) q += "&label=" + seg(k + "=" + v);
      if (!f.state.empty()) q += "&state=" + seg(f.state);
      if (!after.empty()) q += "&after=" + seg(after);
      json j = http_.get(q);
      for (const auto& b : j.at("boxes")) out.push_back(box_from_json(b));
      if (!j["next"].is_string()) break;
      after = j["next"].get<std::string>();
    }
    return out;
  }
  BoxRecord start_box(const std::string& ref) override {
    return box_from_json(http_.post(box(ref) + "/start", json::object()));
  }
  BoxRecord pause_box(const std::string& ref) override {
    return box_from_json(http_.post(box(ref) + "/pause", json::object()));
  }
  BoxRecord archive_box(const std::string& ref) override {
    return box_from_json(http_.post(box(ref) + "/archive", json::object()));
  }
  BoxRecord resume_box(const std::string& ref) override {
    return box_from_json(http_.post(box(ref) + "/resume", json::object()));
  }
  BoxRecord stop_box(const std::string& ref, int64_t grace_ms) override {
    return box_from_json(http_.post(box(ref) + "/stop", {{"grace_ms", grace_ms}}));
  }
  void remove_box(const std::string& ref, bool force) override {
    http_.del(box(ref) + (force ? "?force=true" : ""));
  }
  BoxRecord inspect(const std::string& ref, BoxUsage& usage,
                    std::vector<BoxEvent>& events) override {
    return box_from_json(http_.get(box(ref)), &usage, &events);
  }
  BoxUsage usage(const std::string& ref) override {
    BoxUsage u;
    std::vector<BoxEvent> ev;
    box_from_json(http_.get(box(ref)), &u, &ev);
    return u;
  }

  std::unique_ptr<ExecSession> start_exec(const std::string& ref, const ExecSpec& spec) override {
    validate_exec_spec(spec);
    if (spec.tty)
      throw_invalid(
          "terminals (-t) are not available over HTTP yet; unset UPSTREAM_URL to use the "
          "local state directory");
    json body = json::object();
    if (!spec.shell.empty())
      body["shell"] = spec.shell;
    else
      body["cmd"] = spec.argv;
    json env = json::object();
    for (const auto& e : spec.env) {
      auto eq = e.find('=');
      env[e.substr(0, eq)] = eq == std::string::npos ? "" : e.substr(eq + 1);
    }
    if (!env.empty()) body["env"] = env;
    if (!spec.cwd.empty()) body["cwd"] = spec.cwd;
    if (!spec.user.empty()) body["user"] = spec.user;
    if (spec.timeout_ms) body["timeout_ms"] = spec.timeout_ms;
    if (spec.background) {
      body["background"] = true;
      return std::make_unique<RemoteExec>(http_, http_.post(box(ref) + "/execs", body));
    }
    body["stream"] = true;
    if (spec.stdin) body["stdin_stream"] = true;
    auto conn = http_.open("POST", box(ref) + "/execs", body.dump(), "application/json");
    return std::make_unique<RemoteExec>(http_, ref, std::move(conn), spec.stdin);
  }
  std::optional<ExecRecord> get_exec(const std::string& ref, uint64_t seq) override {
    try {
      return exec_from_json(http_.get(box(ref) + "/execs/" + std::to_string(seq)));
    } catch (const Error& e) {
      if (e.code() != Errc::not_found) throw;
      get_box(ref);  // a missing box is an error; a missing exec is "none"
      return std::nullopt;
    }
  }
  std::vector<ExecRecord> list_execs(const std::string& ref, bool running_only,
                                     size_t limit) override {
    json j = http_.get(box(ref) + "/execs?limit=" + std::to_string(limit) +
                       (running_only ? "&running=true" : ""));
    std::vector<ExecRecord> out;
    for (const auto& e : j.at("execs")) out.push_back(exec_from_json(e));
    return out;
  }
  void kill_exec(const std::string& ref, uint64_t seq, int signal) override {
    http_.post(box(ref) + "/execs/" + std::to_string(seq) + "/kill", {{"signal", signal}});
  }
  std::vector<Engine::ExecProcesses> exec_processes(const std::string& ref) override {
    std::vector<Engine::ExecProcesses> out;
    json j = http_.get(box(ref) + "/processes");
    for (const auto& e : j.at("execs"))
      out.push_back({e.value("exec", uint64_t{0}), e.value("running", false),
                     e.value("processes", size_t{0})});
    return out;
  }
  uint64_t copy_log(const std::string& ref, uint64_t seq, Stream which, uint64_t offset,
                    int out_fd) override {
    auto c = http_.open("GET",
                        box(ref) + "/execs/" + std::to_string(seq) +
                            "/logs?stream=" + (which == Stream::stdout_ ? "stdout" : "stderr") +
                            "&offset=" + std::to_string(offset),
                        "", "");
    return c->copy_to(out_fd);
  }

  void copy_out(const std::string& ref, const std::string& box_path, const std::string& host_path,
                const std::string& user) override {
    json st = http_.get(box(ref) + "/files/stat?path=" + seg(box_path) + uq(user));
    CopyOutPlan plan = plan_copy_out(host_path, st.value("type", "") == "dir");
    UniqueFd tmp = temp_file();
    download_tar(ref, box_path, tmp.get(), user);
    ::lseek(tmp.get(), 0, SEEK_SET);
    tar_to_host(tmp.get(), plan);
  }
  void copy_in(const std::string& ref, const std::string& host_path, const std::string& box_dest,
               const std::string& user) override {
    BoxRecord b = get_box(ref);
    std::string dest = upstream::box_path(box_dest, b.spec.workdir);
    CopyInPlan plan = plan_copy_in(host_path, dest, [&](const std::string& p) {
      try {
        return std::optional<std::string>(
            http_.get(box(b.id) + "/files/stat?path=" + seg(p) + "&follow=true" + uq(user))
                .value("type", ""));
      } catch (const Error& e) {
        if (e.code() == Errc::not_found) return std::optional<std::string>();
        throw;
      }
    });
    UniqueFd tmp = temp_file();
    host_tree_to_tar(host_path, plan.top, tmp.get());
    ::lseek(tmp.get(), 0, SEEK_SET);
    put_tar(b.id, plan.dir, tmp.get(), user);
  }
  void download_tar(const std::string& ref, const std::string& box_path, int out_fd,
                    const std::string& user) override {
    auto c = http_.open("GET", box(ref) + "/files/archive?path=" + seg(box_path) + uq(user));
    c->copy_to(out_fd);
  }
  void upload_tar(const std::string& ref, const std::string& box_dir, int in_fd,
                  const std::string& user) override {
    UniqueFd tmp = temp_file();
    char buf[65536];
    for (;;) {
      ssize_t n = ::read(in_fd, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) throw_sys("read the tar stream");
      if (n == 0) break;
      write_all(tmp.get(), buf, static_cast<size_t>(n));
    }
    ::lseek(tmp.get(), 0, SEEK_SET);
    put_tar(ref, box_dir, tmp.get(), user);
  }

  SystemInfo system_info() override {
    json j = http_.get("/v1/info");
    SystemInfo s;
    s.version = j.value("version", "");
    s.home = http_.url();
    s.storage = j.value("storage", "");
    s.cgroups = j.value("cgroups", "");
    s.proc_view = j.value("proc_view", "");
    s.kernel = j.value("kernel", "");
    auto boxes = list_boxes({});
    s.boxes = boxes.size();
    for (const auto& b : boxes) {
      s.running += b.state == box_state::running;
      s.paused += b.state == box_state::paused;
    }
    return s;
  }

  int run_document(const pipeline::RunOptions& opts) override {
    if (opts.dry_run) return pipeline::run_document({}, opts);  // nothing runs: nothing to send
    return run_remote(http_, opts);
  }
  std::vector<SessionSummary> list_sessions() override {
    std::vector<SessionSummary> out;
    json listed = http_.get("/v1/sessions");
    for (const auto& x : listed.at("sessions"))
      out.push_back(
          {x.value("name", ""),
           x.contains("tenant") && x["tenant"].is_string() ? x["tenant"].get<std::string>() : "",
           x.value("box_id", ""), x.value("last_status", ""), x.value("turns", size_t{0}),
           parse_time(x.value("updated_at", ""))});
    return out;
  }
  SessionView get_session(const std::string& name) override {
    json j = http_.get(session(name));
    SessionView v;
    v.name = name;
    v.box_id = j.value("box_id", "");
    v.cwd = j.value("cwd", "");
    v.context = http_.url() + session(name);
    if (j.contains("env") && j["env"].is_object())
      for (auto it = j["env"].begin(); it != j["env"].end(); ++it)
        v.env.emplace_back(it.key(), it.value().get<std::string>());
    for (const auto& t : j.at("turns")) v.turns.push_back(pipeline::turn_from_json(t));
    return v;
  }
  json session_manifest(const std::string& name) override {
    return http_.get(session(name, "/context"));
  }
  void remove_session(const std::string& name) override { http_.del(session(name)); }
  void export_session(const std::string& name, int fd) override {
    http_.get(session(name));  // a clear error before anything is written
    http_.open("GET", session(name, "/export"))->copy_to(fd);
  }

 private:
  // A tenant's session, named TENANT/NAME, is the tenant's NAME for the installation's keys.
  static std::string session(const std::string& name, const std::string& under = "") {
    auto slash = name.find('/');
    if (slash == std::string::npos) return api::path("/v1/sessions/{session}", {name}) + under;
    return api::path("/v1/sessions/{session}", {name.substr(slash + 1)}) + under +
           "?tenant=" + seg(name.substr(0, slash));
  }
  static std::string box(const std::string& ref) { return api::path("/v1/boxes/{box}", {ref}); }
  static std::string uq(const std::string& user) {
    return user.empty() ? "" : "&user=" + seg(user);
  }
  void put_tar(const std::string& ref, const std::string& dir, int fd, const std::string& user) {
    auto c = http_.open("PUT", box(ref) + "/files/archive?path=" + seg(dir) + uq(user), "",
                        "application/x-tar", fd);
    c->read_all();
  }

  client::Client http_;
};

}  // namespace

std::unique_ptr<Backend> make_remote_backend(const std::string& url, const std::string& key) {
  return std::make_unique<RemoteBackend>(url, key);
}

}  // namespace upstream::cli
