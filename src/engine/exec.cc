#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/error.h"
#include "common/init_protocol.h"
#include "common/ipc.h"
#include "common/strings.h"
#include "common/time.h"
#include "engine/impl.h"

namespace upstream {

using nlohmann::json;

namespace {

// Keeps the last `max` bytes written to it.
class Tail {
 public:
  explicit Tail(size_t max) : max_(max) {}
  void add(std::string_view d) {
    total_ += d.size();
    if (d.size() >= max_) {
      buf_.assign(d.substr(d.size() - max_));
      return;
    }
    buf_.append(d);
    if (buf_.size() > 2 * max_) buf_.erase(0, buf_.size() - max_);
  }
  std::string str() const { return buf_.size() > max_ ? buf_.substr(buf_.size() - max_) : buf_; }
  uint64_t total() const { return total_; }

 private:
  size_t max_;
  std::string buf_;
  uint64_t total_ = 0;
};

class Session : public ExecSession {
 public:
  Session(Engine::Impl& impl, BoxRecord box, ExecRecord rec, uint64_t oom_before)
      : I_(impl),
        box_(std::move(box)),
        rec_(std::move(rec)),
        oom_before_(oom_before),
        out_tail_(impl.opts.exec_tail_bytes),
        err_tail_(impl.opts.exec_tail_bytes) {}

  ~Session() override {
    // Leaving without waiting detaches: the exec keeps running, its status file records the end.
  }

  uint64_t seq() const override { return rec_.seq; }
  pid_t pid() const override { return rec_.pid; }
  std::string box_id() const override { return box_.id; }
  bool finished() const override { return done_; }
  int stdin_fd() const override { return tty_ ? tty_.get() : stdin_.get(); }
  int stdout_fd() const override { return tty_ ? tty_.get() : stdout_.get(); }
  int stderr_fd() const override { return stderr_.get(); }
  int tty_fd() const override { return tty_.get(); }
  void close_stdin() override { stdin_.reset(); }

  void signal(int sig) override {
    if (done_ || !ctl_) return;
    try {
      ipc::send(ctl_.get(), {{"op", "signal"}, {"signal", sig}});
    } catch (const Error&) {
    }
  }

  void resize(uint16_t rows, uint16_t cols) override {
    if (!tty_) return;
    winsize ws{};
    ws.ws_row = rows;
    ws.ws_col = cols;
    ::ioctl(tty_.get(), TIOCSWINSZ, &ws);
  }

  ExecRecord wait(const Sink& sink, int stdin_source, int event_fd,
                  const std::function<void()>& on_event) override;

  // Set up by start_exec.
  UniqueFd ctl_, stdin_, stdout_, stderr_, tty_;
  bool done_ = false;
  ExecRecord& record() { return rec_; }
  void finish_failed(int code, const std::string& message);

 private:
  void output(Stream s, std::string_view data, const Sink& sink);
  void finalize(const json& exit);
  Engine::Impl& I_;
  BoxRecord box_;
  ExecRecord rec_;
  uint64_t oom_before_;
  Tail out_tail_, err_tail_;
  UniqueFd out_log_, err_log_;
};

void Session::output(Stream s, std::string_view data, const Sink& sink) {
  bool is_out = s == Stream::stdout_;
  (is_out ? out_tail_ : err_tail_).add(data);
  UniqueFd& log = is_out ? out_log_ : err_log_;
  if (!log) {
    std::string path = I_.log_path(box_.id, rec_.seq, is_out ? "out" : "err");
    log.reset(::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
  }
  // The full log is best effort: a box that filled its disk still gets its output streamed.
  if (log && ::write(log.get(), data.data(), data.size()) < 0) log.reset();
  if (sink) sink(s, data);
}

void Session::finish_failed(int code, const std::string& message) {
  done_ = true;
  rec_.state = "failed";
  rec_.exit_code = code;
  rec_.reason = "failed: " + message;
  rec_.ended_at = now_ms();
  rec_.stderr_tail = "upstream: " + message + "\n";
  rec_.stderr_bytes = rec_.stderr_tail.size();
  std::lock_guard g(I_.mu);
  I_.store.finish_exec(rec_);
}

void Session::finalize(const json& exit) {
  initproto::ExitStatus st = exit.get<initproto::ExitStatus>();
  rec_.state = "exited";
  rec_.exit_code = st.code;
  rec_.signal = st.signal;
  rec_.reason = st.reason;
  rec_.timed_out = st.timed_out;
  rec_.started_at = st.started_at ? st.started_at : rec_.started_at;
  rec_.ended_at = st.ended_at ? st.ended_at : now_ms();
  rec_.cpu_us = st.cpu_us;
  rec_.max_rss_kb = st.max_rss_kb;
  if (st.signal == SIGKILL && !st.timed_out && !st.killed) {
    // Killed without anyone asking: the box's OOM killer, if its counter moved.
    if (I_.cgroup(box_.id).oom_kills() > oom_before_) {
      rec_.oom_killed = true;
      rec_.reason = "oom";
    }
  }
  rec_.stdout_tail = out_tail_.str();
  rec_.stderr_tail = err_tail_.str();
  rec_.stdout_bytes = out_tail_.total();
  rec_.stderr_bytes = err_tail_.total();
  done_ = true;
  std::lock_guard g(I_.mu);
  I_.store.finish_exec(rec_);
}

ExecRecord Session::wait(const Sink& sink, int stdin_source, int event_fd,
                         const std::function<void()>& on_event) {
  if (done_ || !ctl_) return rec_;  // finished, or a background exec (its end is recorded later)
  char buf[65536];
  bool stdin_open = stdin_source >= 0 && (stdin_ || tty_);
  std::optional<json> exit;
  auto drain = [&](UniqueFd& fd, Stream s, bool block) {
    for (;;) {
      ssize_t n = ::read(fd.get(), buf, sizeof buf);
      if (n > 0) {
        output(s, std::string_view(buf, static_cast<size_t>(n)), sink);
        if (!block) continue;
        return;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n == 0 || (n < 0 && errno != EAGAIN)) fd.reset();  // EOF (or EIO from a closed tty)
      return;
    }
  };
  while (!exit) {
    std::vector<pollfd> fds;
    auto add = [&](int fd) {
      if (fd >= 0) fds.push_back({fd, POLLIN, 0});
    };
    add(ctl_.get());
    add(tty_ ? tty_.get() : stdout_.get());
    add(stderr_.get());
    if (stdin_open) add(stdin_source);
    add(event_fd);
    int r = ::poll(fds.data(), fds.size(), -1);
    if (r < 0) {
      if (errno == EINTR) continue;
      throw_sys("poll");
    }
    for (const auto& p : fds) {
      if (!p.revents) continue;
      if (p.fd == event_fd) {
        if (on_event) on_event();
        continue;
      }
      if (p.fd == ctl_.get()) {
        auto m = ipc::recv(ctl_.get());
        if (!m) {
          // The init went away: the box stopped under us.
          if (errno == EAGAIN) continue;
          ctl_.reset();
          json lost = {{"code", -1}, {"reason", "box-stopped"}, {"ended_at", now_ms()}};
          exit = lost;
        } else if (m->body.value("event", "") == "exit") {
          exit = m->body;
        }
      } else if (p.fd == stdout_.get() || (tty_ && p.fd == tty_.get())) {
        drain(tty_ ? tty_ : stdout_, Stream::stdout_, true);
      } else if (p.fd == stderr_.get()) {
        drain(stderr_, Stream::stderr_, true);
      } else if (p.fd == stdin_source) {
        ssize_t n = ::read(stdin_source, buf, sizeof buf);
        int target = tty_ ? tty_.get() : stdin_.get();
        if (n > 0 && target >= 0) {
          try {
            write_all(target, buf, static_cast<size_t>(n));
          } catch (const Error&) {
            stdin_open = false;
          }
        } else if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN)) {
          stdin_open = false;
          if (tty_) {
            char eot = 4;  // end of input on a terminal
            (void)!::write(tty_.get(), &eot, 1);
          } else {
            stdin_.reset();
          }
        }
      }
    }
  }
  // Whatever the process wrote before it exited is in the pipes now; read it without waiting for
  // EOF, which a background child holding the pipe open would postpone forever.
  for (UniqueFd* fd : {tty_ ? &tty_ : &stdout_, &stderr_}) {
    if (!*fd) continue;
    set_nonblocking(fd->get(), true);
    drain(*fd, fd == &stderr_ ? Stream::stderr_ : Stream::stdout_, false);
  }
  finalize(*exit);
  ctl_.reset();
  stdin_.reset();
  stdout_.reset();
  stderr_.reset();
  tty_.reset();
  return rec_;
}

// Opens one of an exec's files in the box's log space. When that space is full, the logs of the
// oldest finished execs make room (their records, with output tails, stay in the database).
UniqueFd open_exec_file(Engine::Impl& I, const BoxRecord& box, uint64_t seq, const char* ext,
                        int flags) {
  std::string path = I.log_path(box.id, seq, ext);
  std::vector<ExecRecord> old;
  size_t next = 0;
  for (;;) {
    int fd = ::open(path.c_str(), flags | O_CLOEXEC, 0600);
    if (fd >= 0) return UniqueFd(fd);
    if (errno != EDQUOT && errno != ENOSPC) throw_sys(std::string("create exec ") + ext + " file");
    if (old.empty()) {
      std::lock_guard g(I.mu);
      old = I.store.list_execs(box.id, false, 0);
    }
    while (next < old.size() && (old[next].state == "running" || old[next].seq == seq)) next++;
    if (next >= old.size())
      throw_sys(Errc::resource_exhausted, "the box's log space is full", EDQUOT);
    for (const char* e : {"out", "err", "status"})
      ::unlink(I.log_path(box.id, old[next].seq, e).c_str());
    next++;
  }
}

}  // namespace

std::unique_ptr<ExecSession> Engine::start_exec(const std::string& ref, const ExecSpec& spec) {
  Impl& I = *impl_;
  validate_exec_spec(spec);
  BoxRecord box;
  ExecRecord rec;
  {
    std::lock_guard g(I.mu);
    box = I.store.resolve(ref);
    if (box.state == box_state::paused) box = I.wake(box, "resumed for an exec");
    if (box.state != box_state::running) {
      box = I.check_alive(box);
      throw Error(Errc::failed_precondition, "box " + box.name + " is " + box.state +
                                                 "; start it with `upstream box start " + box.name +
                                                 "`");
    }
    // A box's DNS and proxy live in netd: brought back if it died (a few microseconds when not).
    if (box.spec.network != NetworkMode::none) I.firewall.ensure();
    rec.box_id = box.id;
    rec.argv = spec.argv;
    if (!spec.shell.empty()) rec.argv = {"/bin/sh", "-c", spec.shell};
    rec.user = spec.user.empty() ? box.spec.user : spec.user;
    rec.cwd = spec.cwd.empty() ? box.spec.workdir : spec.cwd;
    rec.background = spec.background;
    rec.tty = spec.tty;
    rec.state = "running";
    rec.started_at = now_ms();
    I.db.transaction([&] {
      rec.seq = I.store.next_exec_seq(box.id);
      I.store.insert_exec(rec);
    });
    if (rec.seq % 1000 == 0) {
      for (uint64_t old : I.store.prune_execs(box.id, I.opts.exec_history))
        for (const char* ext : {"out", "err", "status"})
          ::unlink(I.log_path(box.id, old, ext).c_str());
    }
  }

  auto session = std::make_unique<Session>(I, box, rec, I.cgroup(box.id).oom_kills());
  UniqueFd conn;
  try {
    conn = I.connect(box);
  } catch (const Error& e) {
    session->finish_failed(125, e.what());
    throw;
  }
  UniqueFd status;
  try {
    status = open_exec_file(I, box, rec.seq, "status", O_RDWR | O_CREAT | O_TRUNC);
  } catch (const Error& e) {
    session->finish_failed(125, e.what());
    throw;
  }

  std::vector<std::string> env = box.spec.env;
  for (const auto& e : spec.env) env.push_back(e);
  // A box whose HTTPS requests the host proxy may intercept trusts the egress CA (added to the
  // system bundle when the box started); tools that bring their own bundle are pointed at it.
  if (!box.spec.egress.headers.empty()) {  // validation keeps headers off boxes without network
    const std::string bundle = "/etc/ssl/certs/ca-certificates.crt";
    for (const auto& [k, v] : std::vector<std::pair<std::string, std::string>>{
             {"SSL_CERT_FILE", bundle},
             {"REQUESTS_CA_BUNDLE", bundle},
             {"CURL_CA_BUNDLE", bundle},
             {"GIT_SSL_CAINFO", bundle},
             {"NODE_EXTRA_CA_CERTS", "/usr/local/share/ca-certificates/upstream-egress.crt"}}) {
      bool set = false;
      for (const auto& e : env)
        if (e.compare(0, k.size() + 1, k + "=") == 0) set = true;
      if (!set) env.push_back(k + "=" + v);
    }
  }
  json req = {{"op", "exec"},
              {"seq", rec.seq},
              {"argv", rec.argv},
              {"env", env},
              {"cwd", rec.cwd},
              {"user", rec.user},
              {"timeout_ms", spec.timeout_ms},
              {"detach", spec.background}};
  if (!spec.shell.empty()) req["shell"] = spec.shell;
  std::vector<int> fds{status.get()};
  UniqueFd child_in, child_out, child_err;
  if (spec.tty) {
    req["tty"] = {{"rows", spec.rows}, {"cols", spec.cols}};
  } else if (spec.background) {
    child_out = open_exec_file(I, box, rec.seq, "out", O_WRONLY | O_CREAT | O_APPEND);
    child_err = open_exec_file(I, box, rec.seq, "err", O_WRONLY | O_CREAT | O_APPEND);
    req["stdio"] = {false, true, true};
    fds.push_back(child_out.get());
    fds.push_back(child_err.get());
  } else {
    if (spec.stdin) {
      Pipe p = make_pipe(O_CLOEXEC);
      child_in = std::move(p.read);
      session->stdin_ = std::move(p.write);
    }
    Pipe o = make_pipe(O_CLOEXEC), e = make_pipe(O_CLOEXEC);
    child_out = std::move(o.write);
    child_err = std::move(e.write);
    session->stdout_ = std::move(o.read);
    session->stderr_ = std::move(e.read);
    req["stdio"] = {spec.stdin, true, true};
    if (spec.stdin) fds.push_back(child_in.get());
    fds.push_back(child_out.get());
    fds.push_back(child_err.get());
  }
  ipc::send(conn.get(), req, fds);
  child_in.reset();
  child_out.reset();
  child_err.reset();
  auto reply = ipc::recv_wait(conn.get(), 30000);
  if (!reply) {
    session->finish_failed(125, "the box stopped while starting the command");
    return session;
  }
  if (!reply->body.value("ok", false)) {
    std::string msg = reply->body.value("error", std::string("cannot start the command"));
    int code = reply->body.value("code", 126);
    std::string kind = reply->body.value("kind", "");
    if (kind == "invalid_argument" || kind == "already_exists") {
      session->finish_failed(125, msg);
      throw Error(Errc::invalid_argument, msg);
    }
    session->finish_failed(code, msg);
    return session;
  }
  session->record().pid = reply->body.value("pid", 0);
  if (reply->body.contains("argv"))
    session->record().argv = reply->body["argv"].get<std::vector<std::string>>();
  if (spec.tty) {
    if (reply->fds.empty()) throw Error("the box did not return a terminal");
    session->tty_ = std::move(reply->fds[0]);
  }
  if (spec.background) {
    // Nothing to wait for here: the init records the end in the status file.
    session->done_ = false;
    return session;
  }
  session->ctl_ = std::move(conn);
  return session;
}

std::optional<ExecRecord> Engine::get_exec(const std::string& ref, uint64_t seq) {
  Impl& I = *impl_;
  std::lock_guard g(I.mu);
  BoxRecord box = I.check_alive(I.store.resolve(ref));
  auto e = I.store.get_exec(box.id, seq);
  if (e && e->state == "running") {
    I.finish_exec_from_status(*e, box);
    e = I.store.get_exec(box.id, seq);
  }
  return e;
}

std::vector<ExecRecord> Engine::list_execs(const std::string& ref, bool running_only,
                                           size_t limit) {
  Impl& I = *impl_;
  std::lock_guard g(I.mu);
  BoxRecord box = I.check_alive(I.store.resolve(ref));
  I.refresh_execs(box);
  return I.store.list_execs(box.id, running_only, limit);
}

void Engine::kill_exec(const std::string& ref, uint64_t seq, int sig) {
  Impl& I = *impl_;
  BoxRecord box;
  {
    std::lock_guard g(I.mu);
    box = I.check_alive(I.store.resolve(ref));
    if (!I.store.get_exec(box.id, seq))
      throw Error(Errc::not_found, "box " + box.name + " has no exec " + std::to_string(seq));
    box = I.wake(box, "resumed to signal an exec");
    if (box.state != box_state::running)
      throw Error(Errc::failed_precondition,
                  "box " + box.name + " is " + box.state + "; nothing of it is running");
  }
  UniqueFd conn = I.connect(box);
  ipc::send(conn.get(), {{"op", "kill"}, {"seq", seq}, {"signal", sig}, {"tree", true}});
  auto reply = ipc::recv_wait(conn.get(), 10000);
  if (!reply) throw Error(Errc::failed_precondition, "the box stopped");
  if (!reply->body.value("ok", false)) {
    std::string msg = reply->body.value("error", std::string("kill failed"));
    std::lock_guard g(I.mu);
    I.refresh_execs(box);
    throw Error(
        reply->body.value("kind", "") == "not_found" ? Errc::failed_precondition : Errc::internal,
        msg);
  }
}

std::vector<Engine::ExecProcesses> Engine::exec_processes(const std::string& ref) {
  Impl& I = *impl_;
  BoxRecord box;
  {
    std::lock_guard g(I.mu);
    box = I.wake(I.check_alive(I.store.resolve(ref)), "resumed to list processes");
  }
  std::vector<ExecProcesses> out;
  if (box.state != box_state::running) return out;
  UniqueFd conn = I.connect(box);
  ipc::send(conn.get(), {{"op", "ps"}});
  auto reply = ipc::recv_wait(conn.get(), 10000);
  if (!reply || !reply->body.value("ok", false)) return out;
  for (const auto& e : reply->body["execs"])
    out.push_back(
        {e.value("seq", uint64_t{0}), e.value("running", false), e.value("procs", size_t{0})});
  return out;
}

std::pair<std::string, std::string> Engine::exec_log_paths(const std::string& ref, uint64_t seq) {
  Impl& I = *impl_;
  std::lock_guard g(I.mu);
  BoxRecord box = I.store.resolve(ref);
  if (!I.store.get_exec(box.id, seq))
    throw Error(Errc::not_found, "box " + box.name + " has no exec " + std::to_string(seq));
  return {I.log_path(box.id, seq, "out"), I.log_path(box.id, seq, "err")};
}

}  // namespace upstream
