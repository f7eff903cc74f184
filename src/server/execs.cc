// /v1/boxes/{box}/execs: run commands (waited on, streamed as NDJSON or SSE, or in the
// background), feed their stdin, read their logs, signal them.
#include "server/api.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <thread>

#include "common/error.h"
#include "common/fd.h"
#include "common/strings.h"
#include "common/time.h"
#include "common/utf8.h"
#include "engine/wire.h"
#include "server/json_body.h"
#include "server/params.h"

namespace upstream::server {

using nlohmann::json;

namespace {

// Writes a whole buffer to a pipe or file, giving up after timeout_ms without progress.
bool write_with_timeout(int fd, std::string_view data, int timeout_ms) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n > 0) {
      data.remove_prefix(static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      pollfd p{fd, POLLOUT, 0};
      if (::poll(&p, 1, timeout_ms) <= 0) return false;
      continue;
    }
    return false;
  }
  return true;
}

}  // namespace

// A foreground exec whose stdin is fed by later requests.
struct Api::LiveExec {
  std::mutex mu;
  UniqueFd stdin_write;  // our end of the pipe the exec's stdin is copied from
};

ExecRequest parse_exec_request(const std::string& body, const std::string& accept) {
  Body b(body, {"cmd", "shell", "env", "cwd", "user", "timeout_ms", "background", "stdin",
                "stdin_stream", "stream"});
  ExecRequest q;
  ExecSpec& spec = q.spec;
  spec.argv = b.string_list("cmd");
  if (auto s = b.str("shell")) spec.shell = *s;
  if (spec.argv.empty() == spec.shell.empty())
    bad("give exactly one of 'cmd' (an array: the command and its arguments) or 'shell' (a "
        "command line)");
  for (auto& [k, v] : b.string_map("env")) {
    if (!valid_env_name(k)) bad("env: '" + k + "' is not a valid variable name");
    spec.env.push_back(k + "=" + v);
  }
  if (auto v = b.str("cwd")) spec.cwd = *v;
  if (auto v = b.str("user")) spec.user = *v;
  if (auto v = b.uint("timeout_ms")) spec.timeout_ms = *v;
  spec.background = b.boolean("background").value_or(false);
  q.stdin_data = b.str("stdin");
  q.stdin_stream = b.boolean("stdin_stream").value_or(false);
  q.sse = accept.find("text/event-stream") != std::string::npos;
  q.stream = b.boolean("stream").value_or(false) || q.sse ||
             accept.find("application/x-ndjson") != std::string::npos;
  if (spec.background && (q.stdin_data || q.stdin_stream || q.stream))
    bad("a background exec takes no stdin and is not streamed; read its output from "
        "/execs/{exec}/logs");
  if (q.stdin_stream && !q.stream) bad("'stdin_stream' needs a streamed exec ('stream': true)");
  if (q.stdin_data && q.stdin_stream)
    bad("give either 'stdin' (the data) or 'stdin_stream', not both");
  spec.stdin = q.stdin_data.has_value() || q.stdin_stream;
  validate_exec_spec(spec);
  return q;
}

std::shared_ptr<void> Api::hold_exec_slot(const std::string& tenant) {
  uint64_t max_execs = 0;
  if (!tenant.empty()) {
    Tenant t;
    {
      std::lock_guard g(keys_mu_);
      t = keys_.tenant(tenant);
    }
    auto mx = t.limits.max_execs ? t.limits.max_execs : opts_.default_max_execs;
    max_execs = mx.value_or(0);
  }
  {
    std::lock_guard g(execs_mu_);
    auto& n = tenant_execs_[tenant];
    if (max_execs && n >= max_execs)
      throw ApiError(
          429, "resource_exhausted",
          "tenant " + tenant + " already runs " + std::to_string(n) + " execs, its limit");
    n++;
  }
  return std::shared_ptr<void>(nullptr, [this, tenant](void*) {
    std::lock_guard g(execs_mu_);
    tenant_execs_[tenant]--;
  });
}

void Api::handle_exec_create(Call& c, const BoxRecord& box) {
  ExecRequest q = parse_exec_request(c.req.body, c.req.accept);
  const ExecSpec& spec = q.spec;
  std::shared_ptr<void> slot = hold_exec_slot(c.tenant);

  int64_t t0 = mono_us();
  std::unique_ptr<ExecSession> s;
  try {
    s = engine_.start_exec(box.id, spec);
  } catch (...) {
    metrics_.exec_started(false);
    throw;
  }
  metrics_.exec_started(true);
  // It could not start (no such program, a bad user...): the reason is its stderr.
  std::string early_err;
  if (s->finished()) early_err = s->wait({}).stderr_tail;

  if (spec.background) {
    auto rec = engine_.get_exec(box.id, s->seq());
    json j = rec ? exec_json(*rec) : json{{"box_id", box.id}, {"exec", s->seq()}};
    c.json_reply(202, j);
    return;
  }

  // Stdin: inline data through a pipe we fill from a thread, or a pipe later requests fill.
  UniqueFd stdin_read;
  std::shared_ptr<LiveExec> live;
  std::thread feeder;
  if (spec.stdin) {
    Pipe p = make_pipe(O_CLOEXEC);
    stdin_read = std::move(p.read);
    if (q.stdin_data) {
      int wfd = p.write.release();
      feeder = std::thread([wfd, data = std::move(*q.stdin_data)] {
        (void)write_with_timeout(wfd, data, 3600 * 1000);
        ::close(wfd);
      });
    } else {
      live = std::make_shared<LiveExec>();
      live->stdin_write = std::move(p.write);
      set_nonblocking(live->stdin_write.get(), true);
      std::lock_guard g(execs_mu_);
      live_[{box.id, s->seq()}] = live;
    }
  }
  struct Unregister {
    Api* api;
    std::shared_ptr<LiveExec> live;
    std::pair<std::string, uint64_t> key;
    std::thread* feeder;
    ~Unregister() {
      if (live) {
        std::lock_guard g(api->execs_mu_);
        api->live_.erase(key);
        std::lock_guard g2(live->mu);
        live->stdin_write.reset();
      }
      if (feeder->joinable()) feeder->join();
    }
  } unregister{this, live, {box.id, s->seq()}, &feeder};

  int stdin_fd = stdin_read ? stdin_read.get() : -1;
  if (q.stream)
    reply_exec_streamed(c, *s, q.sse, stdin_fd, early_err, t0);
  else
    reply_exec_waited(c, *s, stdin_fd, early_err, t0);
}

void Api::reply_exec_waited(Call& c, ExecSession& s, int stdin_fd, const std::string& early_err,
                            int64_t t0) {
  std::string out, err = early_err;
  bool out_cut = false, err_cut = false;
  size_t cap = opts_.max_output;
  auto sink = [&](Stream st, std::string_view d) {
    std::string& dst = st == Stream::stdout_ ? out : err;
    bool& cut = st == Stream::stdout_ ? out_cut : err_cut;
    if (dst.size() + d.size() > cap) {
      dst.append(d.substr(0, cap - dst.size()));
      cut = true;
    } else {
      dst.append(d);
    }
  };
  ExecRecord rec = s.wait(sink, stdin_fd);
  metrics_.exec_done(static_cast<double>(mono_us() - t0) / 1e6);
  json j = exec_json(rec);
  j["stdout"] = out;
  j["stderr"] = err;
  j["stdout_truncated"] = out_cut;
  j["stderr_truncated"] = err_cut;
  c.json_reply(200, j);
}

// Streamed: one event per piece of output, flushed as it comes.
void Api::reply_exec_streamed(Call& c, ExecSession& s, bool sse, int stdin_fd,
                              const std::string& early_err, int64_t t0) {
  Request& r = c.req;
  const char* ctype = sse ? "text/event-stream" : "application/x-ndjson";
  bool client_gone = false;
  auto emit = [&](const std::string& type, const json& j) {
    if (client_gone) return;
    std::string line = dump(j);
    bool ok =
        sse ? c.res.chunk("event: " + type + "\ndata: " + line + "\n\n") : c.res.chunk(line + "\n");
    if (!ok) {
      client_gone = true;
      s.signal(SIGKILL);
    }
  };
  c.res.begin(200, ctype);
  emit("start", {{"type", "start"}, {"box_id", s.box_id()}, {"exec", s.seq()}, {"pid", s.pid()}});
  // Output is text (UTF-8, never split inside a character) or, when it is not, base64 bytes.
  auto output = [&](const char* type, const std::string& bytes) {
    if (bytes.empty()) return;
    if (valid_utf8(bytes))
      emit(type, {{"type", type}, {"data", bytes}});
    else
      emit(type, {{"type", type}, {"data_b64", base64_encode(bytes)}});
  };
  output("stderr", early_err);
  Utf8Joiner jo, je;
  auto sink = [&](Stream st, std::string_view d) {
    bool o = st == Stream::stdout_;
    output(o ? "stdout" : "stderr", (o ? jo : je).take(d));
  };
  // The client's socket becomes readable when it hangs up: the exec is then killed.
  auto on_event = [&] {
    char b;
    ssize_t n = ::recv(r.socket_fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
      if (!client_gone) s.signal(SIGKILL);
      client_gone = true;
      ::usleep(2000);
    } else {
      ::usleep(20000);  // the client sent more (a pipelined request): look again later
    }
  };
  ExecRecord rec = s.wait(sink, stdin_fd, r.socket_fd, on_event);
  metrics_.exec_done(static_cast<double>(mono_us() - t0) / 1e6);
  output("stdout", jo.rest());
  output("stderr", je.rest());
  json ex = exec_json(rec);
  ex["type"] = "exit";
  emit("exit", ex);
  if (client_gone) throw ApiError(0, "aborted", "the client went away");
  c.res.end();
}

void Api::handle_execs(Call& c, const BoxRecord& box, const std::vector<std::string>& seg) {
  Request& r = c.req;
  const std::string& m = r.method;
  if (seg.size() == 4) {
    if (m != "GET") throw ApiError(405, "method_not_allowed", "use GET or POST " + r.path);
    bool running = bool_param(r, "running", false);
    size_t limit = uint_param(r, "limit", 50, 10000);
    json list = json::array();
    for (const auto& e : engine_.list_execs(box.id, running, limit)) list.push_back(exec_json(e));
    c.json_reply(200, {{"execs", list}});
    return;
  }
  const std::string& ss = seg[4];
  if (ss.empty() || ss.size() > 18 || ss.find_first_not_of("0123456789") != std::string::npos)
    bad("exec number must be a whole number, got '" + ss + "'");
  uint64_t seq = std::stoull(ss);
  auto rec = engine_.get_exec(box.id, seq);
  if (!rec) not_found("box " + box.name + " has no exec " + ss);
  if (seg.size() == 5) {
    if (m != "GET") throw ApiError(405, "method_not_allowed", "use GET " + r.path);
    json j = exec_json(*rec);
    j["stdout_tail"] = rec->stdout_tail;
    j["stderr_tail"] = rec->stderr_tail;
    c.json_reply(200, j);
    return;
  }
  const std::string& op = seg[5];
  if (seg.size() == 6 && op == "logs") {
    if (m != "GET") throw ApiError(405, "method_not_allowed", "use GET " + r.path);
    std::string which = qparam(r, "stream").value_or("stdout");
    if (which != "stdout" && which != "stderr")
      bad("query parameter 'stream' must be stdout or stderr, got '" + which + "'");
    uint64_t offset = uint_param(r, "offset", 0, 1ull << 50);
    auto [out, err] = engine_.exec_log_paths(box.id, seq);
    UniqueFd fd(::open((which == "stdout" ? out : err).c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) {
      // Nothing written (or its log made room for newer ones): the tail kept in the database.
      const std::string& tail = which == "stdout" ? rec->stdout_tail : rec->stderr_tail;
      c.res.send(200, "application/octet-stream",
                 offset >= tail.size() ? std::string() : tail.substr(offset));
      return;
    }
    if (offset && ::lseek(fd.get(), static_cast<off_t>(offset), SEEK_SET) < 0)
      throw_sys("seek in the exec's log");
    int raw = fd.get();
    stream_from_producer(c.res, "application/octet-stream", [raw](int w) {
      char buf[65536];
      for (;;) {
        ssize_t n = ::read(raw, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) throw_sys("read the exec's log");
        if (n == 0) return;
        write_all(w, buf, static_cast<size_t>(n));
      }
    });
    return;
  }
  if (seg.size() == 6 && op == "kill") {
    if (m != "POST") throw ApiError(405, "method_not_allowed", "use POST " + r.path);
    Body b(r.body, {"signal"});
    int sig = SIGKILL;
    if (const json* v = b.get("signal")) {
      if (v->is_number_unsigned())
        sig = parse_signal(std::to_string(v->get<uint64_t>()));
      else if (v->is_string())
        sig = parse_signal(v->get<std::string>());
      else
        bad("field 'signal' must be a signal name such as \"TERM\" or a number");
    }
    engine_.kill_exec(box.id, seq, sig);
    c.json_reply(200, {{"box_id", box.id}, {"exec", seq}, {"signal", sig}});
    return;
  }
  if (seg.size() == 6 && op == "stdin") {
    if (m != "POST") throw ApiError(405, "method_not_allowed", "use POST " + r.path);
    std::shared_ptr<LiveExec> live;
    {
      std::lock_guard g(execs_mu_);
      auto it = live_.find({box.id, seq});
      if (it != live_.end()) live = it->second;
    }
    if (!live)
      throw ApiError(409, "failed_precondition",
                     "exec " + ss +
                         " does not take stdin now (it was not started with "
                         "'stdin_stream', or it ended)");
    bool eof = bool_param(r, "eof", false);
    std::lock_guard g(live->mu);
    if (!live->stdin_write)
      throw ApiError(409, "failed_precondition", "exec " + ss + "'s stdin is closed");
    if (!r.body.empty() && !write_with_timeout(live->stdin_write.get(), r.body, 30000))
      throw ApiError(409, "failed_precondition",
                     "exec " + ss + " is not reading its stdin (or it ended)");
    if (eof) live->stdin_write.reset();
    c.json_reply(200,
                 {{"box_id", box.id}, {"exec", seq}, {"written", r.body.size()}, {"eof", eof}});
    return;
  }
  not_found("no route for " + m + " " + r.path);
}

}  // namespace upstream::server
