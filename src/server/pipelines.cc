// Pipelines over HTTP: a markdown document runs as `upstream run` (this same program, in a child
// process, so that a turn's signals, output and crash stay its own), its progress streamed to the
// client, its written-back report returned; and the sessions' context stores.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <regex>

#include "common/error.h"
#include "common/fd.h"
#include "common/strings.h"
#include "common/time.h"
#include "model/egress.h"
#include "pipeline/context.h"
#include "pipeline/runner.h"
#include "server/api.h"
#include "server/json_body.h"

extern char** environ;

namespace upstream::server {

using nlohmann::json;

namespace {

std::string status_of_exit(int code) {
  switch (code) {
    case pipeline::kRunOk:
      return "succeeded";
    case pipeline::kRunStepFailed:
      return "failed";
    case pipeline::kRunBadDocument:
      return "invalid_document";
    case pipeline::kRunInterrupted:
    case 128 + SIGTERM:
      return "interrupted";
    default:
      return "error";
  }
}

// A turn's child process and what it prints.
struct Child {
  pid_t pid = -1;
  UniqueFd out, err;
};

Child spawn_run(const std::vector<std::string>& argv, const std::string& cwd) {
  Pipe o = make_pipe(O_CLOEXEC), e = make_pipe(O_CLOEXEC);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, o.write.get(), 1);
  posix_spawn_file_actions_adddup2(&fa, e.write.get(), 2);
  // In the document's own directory, so the turn records and shows it by the client's name.
  posix_spawn_file_actions_addchdir_np(&fa, cwd.c_str());
  // The child runs on this machine's state directory, never back through a server.
  std::vector<std::string> env;
  for (char** p = environ; *p; p++)
    if (!starts_with(*p, "UPSTREAM_URL=") && !starts_with(*p, "UPSTREAM_API_KEY="))
      env.emplace_back(*p);
  std::vector<char*> cargv, cenv;
  for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  for (const auto& a : env) cenv.push_back(const_cast<char*>(a.c_str()));
  cenv.push_back(nullptr);
  Child c;
  int r = posix_spawn(&c.pid, argv[0].c_str(), &fa, nullptr, cargv.data(), cenv.data());
  posix_spawn_file_actions_destroy(&fa);
  if (r != 0) throw_sys("start `upstream run`", r);
  c.out = std::move(o.read);
  c.err = std::move(e.read);
  return c;
}

}  // namespace

std::string Api::tenant_session(const Call& c, const std::string& name) const {
  if (name.empty() || !valid_box_name(name))
    bad("invalid session name '" + name + "' (letters, digits, '_', '.', '-'; at most 63)");
  std::string full = c.tenant.empty() ? name : c.tenant + "_" + name;
  if (!valid_box_name(full))
    bad("session name '" + name + "' is too long for this tenant (at most " +
        std::to_string(62 - c.tenant.size()) + " characters)");
  return full;
}

std::string Api::stored_session(const Call& c, const std::string& shown) const {
  std::string full = tenant_session(c, shown);
  auto it = c.req.query.find("tenant");
  if (it == c.req.query.end()) return full;
  const std::string* tenant = &it->second;
  if (!c.tenant.empty())
    bad("query parameter 'tenant' is for the installation's keys: a tenant names its own "
        "sessions only");
  try {
    validate_tenant_name(*tenant);
  } catch (const std::exception& e) {
    bad(std::string("query parameter 'tenant': ") + e.what());
  }
  return *tenant + "_" + shown;
}

namespace {

// Reads the child's stdout (0) and stderr (1) to their ends, each chunk to `lines`. While
// `watch_fd` >= 0 it is the client's socket: when the client goes away (or pipelines another
// request) the run is interrupted with SIGTERM and writes what it has.
void pump_run_output(Child& child, int watch_fd, bool& client_gone,
                     const std::function<void(int, std::string_view)>& lines) {
  char buf[65536];
  bool signalled = false;
  while (child.out || child.err) {
    std::vector<pollfd> fds;
    if (child.out) fds.push_back({child.out.get(), POLLIN, 0});
    if (child.err) fds.push_back({child.err.get(), POLLIN, 0});
    if (watch_fd >= 0 && !signalled) fds.push_back({watch_fd, POLLIN, 0});
    if (::poll(fds.data(), fds.size(), -1) < 0) {
      if (errno == EINTR) continue;
      throw_sys("poll");
    }
    for (const auto& p : fds) {
      if (!p.revents) continue;
      if (p.fd == watch_fd) {
        char b;
        ssize_t n = ::recv(watch_fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) client_gone = true;
        if (client_gone || n > 0) {
          // The client went away (or pipelines another request): the turn is interrupted, and
          // writes what it has.
          if (client_gone) ::kill(child.pid, SIGTERM);
          signalled = true;
        }
        continue;
      }
      UniqueFd& fd = p.fd == child.out.get() ? child.out : child.err;
      ssize_t n = ::read(fd.get(), buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        fd.reset();
        continue;
      }
      lines(&fd == &child.out ? 0 : 1, std::string_view(buf, static_cast<size_t>(n)));
    }
  }
}

}  // namespace

Api::PipelineRun Api::pipeline_request(Call& c) {
  Request& r = c.req;
  PipelineRun q;
  Body b(r.body, {"document", "session", "name", "stream", "verbose", "network", "egress"});
  q.document = b.str("document").value_or("");
  if (q.document.empty()) bad("field 'document' (the markdown text) is required");
  q.name = b.str("name").value_or("document.md");
  const std::string& name = q.name;
  if (name.empty() || name.size() > 200 || name[0] == '.' ||
      name.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") !=
          std::string::npos)
    bad("field 'name' must be a file name such as analysis.md (letters, digits, '.', '_', '-')");
  q.verbose = b.boolean("verbose").value_or(false);
  q.shown_session = b.str("session");
  if (q.shown_session) q.session = tenant_session(c, *q.shown_session);
  // Checked here first: a bad document is refused before anything starts, and a session named in
  // its front matter is the tenant's (passed on with --session, which overrides the document's).
  pipeline::Document parsed = pipeline::parse_document(q.document, q.name);
  if (parsed.steps.empty())
    bad(q.name + ": has no steps (fenced code blocks marked " + pipeline::kStepLanguages + ")");
  if (!q.session && parsed.meta.session) {
    q.shown_session = *parsed.meta.session;
    q.session = tenant_session(c, *q.shown_session);
  }
  // The box's network, over the front matter's: as POST /v1/boxes gives it, without headers (a
  // document's box gets no secrets this way).
  std::optional<std::string> mode = b.str("network");
  const json* eg = b.get("egress");
  if (mode || eg) {
    pipeline::RunNetwork n;
    if (mode) n.mode = parse_network_mode(*mode);
    if (eg) n.egress = egress::from_json(*eg);
    if (!n.egress.headers.empty())
      bad("field 'egress': a pipeline's box takes no headers (give them to a box with POST "
          "/v1/boxes)");
    egress::validate(n.mode, n.egress);
    q.network = n;
  }
  q.stream = b.boolean("stream").value_or(false) ||
             r.accept.find("application/x-ndjson") != std::string::npos;

  return q;
}

// The end of a run: its exit, progress and errors, the run and turn it made, and the report
// (the document as written back into `dir`, or next to it when it was changed meanwhile).
nlohmann::json Api::pipeline_outcome(const PipelineRun& q, int code, const std::string& progress,
                                     const std::string& errors, const std::string& dir) {
  const auto& session = q.session;
  const auto& shown_session = q.shown_session;
  const std::string& name = q.name;
  std::string path = dir + "/" + name;
  json result = {{"type", "end"},
                 {"exit_code", code},
                 {"status", status_of_exit(code)},
                 {"session", shown_session ? json(*shown_session) : json(nullptr)},
                 {"progress", progress},
                 {"errors", errors}};
  std::smatch m;
  // The run's last line: "Failed: 1 of 2 steps succeeded in 0.3s (run r0123abcd); failed: …".
  static const std::regex run_re(
      R"(^(Succeeded|Failed|Interrupted): \d+ of \d+ steps succeeded in \S+ \(run ([0-9a-z]+)\))");
  std::string run_id;
  for (const auto& line : split(progress, '\n'))
    if (std::regex_search(line, m, run_re)) run_id = m[2];
  result["run_id"] = run_id.empty() ? json(nullptr) : json(run_id);
  result["turn"] = nullptr;
  if (!run_id.empty()) {
    const std::string& home = engine_.options().home;
    auto store =
        session ? pipeline::ContextStore::sessions(home) : pipeline::ContextStore::runs(home);
    for (const auto& t : store.turns(session ? *session : run_id))
      if (t.run_id == run_id) {
        result["turn"] = t.turn;
        result["box_id"] = t.box;
      }
  }
  // The report is the document as written back (or, when it was changed meanwhile, next to it).
  std::string report_path = path;
  for (const auto& e : std::filesystem::directory_iterator(dir))
    if (e.path().filename() != name && !run_id.empty() &&
        e.path().filename().string().find(run_id) != std::string::npos)
      report_path = e.path();
  std::string report;
  if (code != pipeline::kRunBadDocument) {
    UniqueFd fd(::open(report_path.c_str(), O_RDONLY | O_CLOEXEC));
    if (fd) report = read_all(fd.get());
    if (session && *session != *shown_session)
      for (size_t at = 0; (at = report.find("`" + *session + "`", at)) != std::string::npos;
           at += shown_session->size() + 2)
        report.replace(at, session->size() + 2, "`" + *shown_session + "`");
  }
  result["report"] = report;
  return result;
}

namespace {

// A run's output as the client sees it. The run's standard output is its events (`--progress
// json`), each passed on with its human line in the client's view (the document named as the
// client did, the session without its tenant); its standard error is error lines. Both are kept
// (progress and errors) for the outcome.
class RunEvents {
 public:
  RunEvents(std::string home, std::optional<std::string> session, std::optional<std::string> shown,
            std::function<void(const json&)> emit)
      : home_(std::move(home)),
        session_(std::move(session)),
        shown_(std::move(shown)),
        emit_(std::move(emit)) {}

  // A chunk of the child's stdout (0) or stderr (1).
  void feed(int which, std::string_view data) {
    std::string& buf = pending_[which];
    buf.append(data);
    size_t nl;
    while ((nl = buf.find('\n')) != std::string::npos) {
      std::string text = buf.substr(0, nl);
      buf.erase(0, nl + 1);
      line(which, text);
    }
  }
  // The last lines without their newline.
  void finish() {
    for (int w : {0, 1})
      if (!pending_[w].empty()) feed(w, "\n");
  }
  std::string progress, errors;

 private:
  void line(int which, const std::string& text) {
    json ev;
    if (which == 0) ev = json::parse(text, nullptr, false);
    if (which == 1 || !ev.is_object() || !ev.contains("type"))
      ev = {{"type", which == 0 ? "progress" : "error"}, {"line", text}};
    if (ev.contains("line") && ev["line"].is_string()) {
      std::string shown = client_view(ev["line"].get<std::string>());
      ev["line"] = shown;
      (which == 0 ? progress : errors) += shown + "\n";
    }
    if (ev.value("type", "") == "summary" && ev.contains("session") && shown_)
      ev["session"] = *shown_;
    if (progress.size() + errors.size() < (16u << 20) || which == 1) emit_(ev);
  }
  std::string client_view(std::string line) const {
    std::vector<std::pair<std::string, std::string>> swaps{{home_ + "/", ""}};
    if (session_ && *session_ != *shown_) {
      swaps.push_back({"session " + *session_, "session " + *shown_});
      swaps.push_back({"/sessions/" + *session_ + "/", "/sessions/" + *shown_ + "/"});
    }
    for (const auto& [from, to] : swaps)
      for (size_t at = 0; (at = line.find(from, at)) != std::string::npos; at += to.size())
        line.replace(at, from.size(), to);
    return line;
  }
  std::string home_;
  std::optional<std::string> session_, shown_;
  std::function<void(const json&)> emit_;
  std::string pending_[2];
};

// Kills and reaps the run's child if the request ends before it did.
struct Reap {
  pid_t& pid;
  ~Reap() {
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      int st;
      while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
      }
    }
  }
};

// Removes the run's spool directory at the end of the request.
struct RemoveDir {
  std::string dir;
  ~RemoveDir() {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
};

}  // namespace

std::vector<std::string> Api::pipeline_argv(const PipelineRun& q, const std::string& tenant) const {
  std::vector<std::string> argv{self_exe_, "run", "--progress", "json", q.name};
  if (q.session) argv.insert(argv.end(), {"--session", *q.session});
  if (q.verbose) argv.push_back("-v");
  if (q.network) {
    argv.insert(argv.end(), {"--network", to_string(q.network->mode)});
    const Egress& e = q.network->egress;
    for (const auto& [flag, list] : {std::pair{"--allow-domain", &e.allow_domains},
                                     {"--allow-cidr", &e.allow_cidrs},
                                     {"--deny-cidr", &e.deny_cidrs}})
      for (const auto& x : *list) argv.insert(argv.end(), {flag, x});
  }
  if (!tenant.empty())
    argv.insert(argv.end(), {"--label", std::string(kTenantLabel) + "=" + tenant});
  return argv;
}

void Api::handle_pipelines(Call& c, const std::vector<std::string>& seg) {
  Request& r = c.req;
  if (seg.size() != 2) throw ApiError(404, "not_found", "no route for " + r.method + " " + r.path);
  if (r.method != "POST") throw ApiError(405, "method_not_allowed", "use POST " + r.path);
  PipelineRun q = pipeline_request(c);
  // The document gets a directory of its own; the report is written back into it.
  RemoveDir spool{engine_.options().home + "/spool/pipelines/" + random_hex(16)};
  std::filesystem::create_directories(spool.dir);
  {
    UniqueFd fd =
        open_or_throw(spool.dir + "/" + q.name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    write_all(fd.get(), q.document);
  }
  Child child = spawn_run(pipeline_argv(q, c.tenant), spool.dir);
  Reap reap{child.pid};

  if (q.stream) c.res.begin(200, "application/x-ndjson");
  bool client_gone = false;
  auto emit = [&](const json& ev) {
    if (!q.stream || client_gone) return;
    if (!c.res.chunk(dump(ev) + "\n")) client_gone = true;
  };
  RunEvents events(engine_.options().home, q.session, q.shown_session, emit);
  pump_run_output(child, q.stream ? r.socket_fd : -1, client_gone,
                  [&](int which, std::string_view data) { events.feed(which, data); });
  events.finish();
  int st = 0;
  while (::waitpid(child.pid, &st, 0) < 0 && errno == EINTR) {
  }
  child.pid = -1;
  int code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);

  json result = pipeline_outcome(q, code, events.progress, events.errors, spool.dir);
  if (q.stream) {
    emit(result);
    if (client_gone) throw ApiError(0, "aborted", "the client went away");
    c.res.end();
    return;
  }
  if (code == pipeline::kRunBadDocument)
    throw ApiError(400, "invalid_argument",
                   trim(events.errors.empty() ? "invalid document" : events.errors));
  result.erase("type");
  c.json_reply(200, result);
}

void Api::handle_sessions(Call& c, const std::vector<std::string>& seg) {
  Request& r = c.req;
  const std::string& home = engine_.options().home;
  pipeline::ContextStore store = pipeline::ContextStore::sessions(home);
  if (seg.size() == 2) {
    if (r.method != "GET") throw ApiError(405, "method_not_allowed", "use GET " + r.path);
    json out = json::array();
    for (const auto& full : store.names()) {
      pipeline::SessionState st = store.state(full).value_or(pipeline::SessionState{});
      st.name = full;
      if (!c.tenant.empty() && !pipeline::session_belongs_to(st, c.tenant)) continue;
      auto turns = store.turns(full);
      // A tenant sees its sessions by the names it gave; the installation's view names each
      // session's tenant (null: the operator's, or one from before sessions recorded it).
      json item = {{"name", c.tenant.empty() ? pipeline::shown_session_name(st)
                                             : full.substr(c.tenant.size() + 1)}};
      if (c.tenant.empty())
        item["tenant"] = st.tenant && !st.tenant->empty() ? json(*st.tenant) : json(nullptr);
      item.update({{"box_id", st.box_id},
                   {"turns", turns.size()},
                   {"last_status", turns.empty() ? "" : turns.back().status},
                   {"updated_at", st.updated_at ? format_time(st.updated_at) : ""}});
      out.push_back(std::move(item));
    }
    c.json_reply(200, {{"sessions", out}});
    return;
  }
  std::string shown = seg[2];
  std::string full = stored_session(c, shown);
  if (!store.exists(full)) throw ApiError(404, "not_found", "no session '" + shown + "'");
  {
    pipeline::SessionState st = store.state(full).value_or(pipeline::SessionState{});
    st.name = full;
    // The operator's session acme_x is not tenant acme's x.
    if (!c.tenant.empty() && !pipeline::session_belongs_to(st, c.tenant))
      throw ApiError(404, "not_found", "no session '" + shown + "'");
  }
  if (seg.size() == 3 && r.method == "GET") {
    auto st = store.state(full);
    json turns = json::array();
    for (const auto& t : store.turns(full)) {
      json tj = pipeline::turn_to_json(t);
      tj["session"] = shown;
      // The document's name as the client gave it (its path on the server means nothing there).
      tj["document"] = t.document.substr(t.document.find_last_of('/') + 1);
      turns.push_back(tj);
    }
    json env = json::object();
    if (st)
      for (const auto& [k, v] : st->env) env[k] = v;
    c.json_reply(200, {{"name", shown},
                       {"box_id", st ? st->box_id : ""},
                       {"cwd", st ? st->cwd : ""},
                       {"env", env},
                       {"turns", turns}});
    return;
  }
  if (seg.size() == 3 && r.method == "DELETE") {
    pipeline::remove_session(engine_, full);
    c.json_reply(200, {{"name", shown}, {"removed", true}});
    return;
  }
  if (seg.size() == 4 && seg[3] == "context" && r.method == "GET") {
    c.json_reply(200, store.manifest(full));
    return;
  }
  if (seg.size() == 4 && seg[3] == "export" && r.method == "GET") {
    stream_from_producer(c.res, "application/x-tar",
                         [&](int w) { pipeline::export_context(store, full, w); });
    return;
  }
  throw ApiError(404, "not_found", "no route for " + r.method + " " + r.path);
}

}  // namespace upstream::server
