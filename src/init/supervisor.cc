#include "init/supervisor.h"

#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <set>
#include <vector>

#include "common/error.h"
#include "common/fd.h"
#include "common/ipc.h"
#include "common/strings.h"
#include "common/time.h"
#include "init/spawn.h"
#include "init/users.h"

namespace upstream::init {

namespace {

using nlohmann::json;

constexpr const char* kDefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

struct Exec {
  uint64_t seq = 0;
  pid_t pid = -1;
  int64_t started_at = 0;
  int64_t deadline_us = 0;  // monotonic; 0 means no timeout
  UniqueFd cgroup;          // this exec's cgroup directory
  UniqueFd status;          // the exec's status file on the host volume
  int conn = -1;            // attached client connection, -1 when detached
  bool timed_out = false;
  bool killed = false;
  std::string reason_override;
  std::vector<std::string> argv;
};

class Supervisor {
 public:
  Supervisor(const initproto::Config& cfg, BoxHandles h) : cfg_(cfg), h_(std::move(h)) {
    for (const auto& r : cfg_.rlimits)
      if (r.resource == RLIMIT_NOFILE) nofile_soft_ = r.soft;
  }

  int run();

 private:
  void add_fd(int fd, uint32_t events);
  void on_listen();
  void on_conn(int fd);
  void close_conn(int fd);
  void on_signal();
  void on_timer();
  void reap();
  void finish(Exec& e, int status, const rusage& ru);
  void rearm_timer();
  void kill_tree(Exec& e, int sig);
  void begin_stop(int64_t grace_ms, int reply_conn);
  void maybe_finish_stop(bool no_children);
  void retry_lingering();
  void reset_oom_score(pid_t pid);
  size_t count_procs(const std::string& group);

  json handle(int conn, ipc::Message& m);
  json do_exec(int conn, ipc::Message& m);
  json do_files(ipc::Message& m);
  json do_kill(const json& body);
  json do_rename(const std::string& hostname);
  json do_ps();
  Identity resolve(const std::string& spec);

  const initproto::Config& cfg_;
  BoxHandles h_;
  bool oom_protected_ = false;  // our oom_score_adj is -1000, which children must not keep
  unsigned long nofile_soft_ = 0;
  UniqueFd epoll_, sigfd_, timer_, devnull_;
  std::map<int, UniqueFd> conns_;  // fd -> connection
  std::map<int, pid_t> attached_;  // connection fd -> exec pid
  std::map<pid_t, Exec> execs_;    // by pid
  std::map<uint64_t, pid_t> by_seq_;
  std::set<std::string> lingering_;  // exec cgroups still holding leftover processes
  bool stopping_ = false;
  int64_t stop_deadline_us_ = 0;
  bool stop_killed_ = false;
  std::vector<int> stop_waiters_;
};

int Supervisor::run() {
  sigset_t all;
  sigfillset(&all);
  sigprocmask(SIG_BLOCK, &all, nullptr);
  sigset_t watched;
  sigemptyset(&watched);
  for (int s : {SIGCHLD, SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2})
    sigaddset(&watched, s);
  sigfd_.reset(::signalfd(-1, &watched, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!sigfd_) throw_sys("signalfd");
  timer_.reset(::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK));
  if (!timer_) throw_sys("timerfd");
  epoll_.reset(::epoll_create1(EPOLL_CLOEXEC));
  if (!epoll_) throw_sys("epoll");
  devnull_.reset(::open("/dev/null", O_RDWR | O_CLOEXEC));
  if (!devnull_) throw_sys("open /dev/null");
  // Our own limit stays high: every running exec holds a few descriptors here.
  rlimit lim;
  if (::getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &lim);
  }
  if (auto adj = ::open("/proc/self/oom_score_adj", O_RDONLY | O_CLOEXEC); adj >= 0) {
    char buf[16] = {};
    (void)!::read(adj, buf, sizeof buf - 1);
    ::close(adj);
    oom_protected_ = std::atoi(buf) < 0;
  }
  add_fd(h_.listen_sock.get(), EPOLLIN);
  add_fd(sigfd_.get(), EPOLLIN);
  add_fd(timer_.get(), EPOLLIN);
  malloc_trim(0);

  epoll_event events[64];
  for (;;) {
    int n = ::epoll_wait(epoll_.get(), events, 64, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_sys("epoll_wait");
    }
    for (int i = 0; i < n; i++) {
      int fd = events[i].data.fd;
      if (fd == h_.listen_sock.get())
        on_listen();
      else if (fd == sigfd_.get())
        on_signal();
      else if (fd == timer_.get())
        on_timer();
      else if (conns_.count(fd))
        on_conn(fd);
    }
  }
}

void Supervisor::add_fd(int fd, uint32_t events) {
  epoll_event ev{};
  ev.events = events;
  ev.data.fd = fd;
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) throw_sys("epoll_ctl");
}

void Supervisor::on_listen() {
  for (;;) {
    int c = ::accept4(h_.listen_sock.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (c < 0) return;
    conns_.emplace(c, UniqueFd(c));
    add_fd(c, EPOLLIN | EPOLLRDHUP);
  }
}

void Supervisor::close_conn(int fd) {
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr);
  if (auto it = attached_.find(fd); it != attached_.end()) {
    if (auto e = execs_.find(it->second); e != execs_.end()) e->second.conn = -1;
    attached_.erase(it);
  }
  conns_.erase(fd);
}

void Supervisor::on_conn(int fd) {
  for (;;) {
    std::optional<ipc::Message> m;
    try {
      m = ipc::recv(fd);
    } catch (const Error&) {
      close_conn(fd);
      return;
    }
    if (!m) {
      if (errno == EAGAIN) return;
      close_conn(fd);  // the client went away; a running exec carries on detached
      return;
    }
    json reply;
    try {
      reply = handle(fd, *m);
    } catch (const Error& e) {
      reply = {{"ok", false}, {"error", e.what()}, {"kind", errc_name(e.code())}};
    } catch (const std::exception& e) {
      reply = {{"ok", false}, {"error", e.what()}, {"kind", "invalid_argument"}};
    }
    if (reply.is_null()) continue;  // answered already (or deferred)
    try {
      ipc::send(fd, reply);
    } catch (const Error&) {
      close_conn(fd);
      return;
    }
  }
}

json Supervisor::handle(int conn, ipc::Message& m) {
  const std::string op = m.body.value("op", "");
  if (op == "ping") return {{"ok", true}, {"execs", execs_.size()}, {"stopping", stopping_}};
  if (stopping_ && op != "ps") throw Error(Errc::failed_precondition, "box is stopping");
  if (op == "exec") return do_exec(conn, m);
  if (op == "files") return do_files(m);
  if (op == "kill") return do_kill(m.body);
  if (op == "ps") return do_ps();
  if (op == "signal") {
    // Sent on an attached exec's own connection: signal its process group.
    auto it = attached_.find(conn);
    if (it == attached_.end()) throw Error(Errc::failed_precondition, "no exec attached");
    int sig = m.body.at("signal").get<int>();
    auto e = execs_.find(it->second);
    if (e != execs_.end()) {
      if (sig == SIGKILL) {
        e->second.killed = true;
        kill_tree(e->second, SIGKILL);
      } else {
        ::kill(-e->second.pid, sig);
      }
    }
    return json();  // no reply: the exit event is the answer
  }
  if (op == "rename") return do_rename(m.body.at("hostname").get<std::string>());
  if (op == "stop") {
    begin_stop(m.body.value("grace_ms", int64_t{10000}), conn);
    return json();
  }
  throw Error(Errc::invalid_argument, "unknown operation '" + op + "'");
}

Identity Supervisor::resolve(const std::string& spec) {
  auto slurp = [](const char* path) {
    try {
      return read_file(path, 4 << 20);
    } catch (const Error&) {
      return std::string();
    }
  };
  if (spec == "root" || spec == "0") {
    Identity id;
    id.name = "root";
    id.home = "/root";
    id.groups = {0};
    return id;
  }
  return resolve_user(spec, cfg_.uid_count, slurp("/etc/passwd"), slurp("/etc/group"));
}

json Supervisor::do_exec(int conn, ipc::Message& m) {
  const json& b = m.body;
  Exec e;
  e.seq = b.at("seq").get<uint64_t>();
  if (b.contains("shell")) {
    // A shell string runs in bash when the box has it (as E2B and most agents expect), else sh.
    const char* sh = ::access("/bin/bash", X_OK) == 0 ? "/bin/bash" : "/bin/sh";
    e.argv = {sh, "-c", b.at("shell").get<std::string>()};
  } else {
    e.argv = b.at("argv").get<std::vector<std::string>>();
  }
  if (e.argv.empty()) throw_invalid("empty command");
  if (by_seq_.count(e.seq))
    throw Error(Errc::already_exists, "exec " + std::to_string(e.seq) + " exists");
  Identity who = resolve(b.value("user", std::string("root")));
  SpawnRequest req;
  req.argv = e.argv;
  req.env = b.value("env", std::vector<std::string>{});
  auto has = [&](const char* key) {
    std::string k = std::string(key) + "=";
    for (const auto& kv : req.env)
      if (kv.compare(0, k.size(), k) == 0) return true;
    return false;
  };
  if (!has("PATH")) req.env.push_back(std::string("PATH=") + kDefaultPath);
  if (!has("HOME")) req.env.push_back("HOME=" + who.home);
  if (!has("USER")) req.env.push_back("USER=" + who.name);
  if (!has("LOGNAME")) req.env.push_back("LOGNAME=" + who.name);
  if (!has("HOSTNAME")) req.env.push_back("HOSTNAME=" + cfg_.hostname);
  req.cwd = b.value("cwd", who.home);
  req.uid = who.uid;
  req.gid = who.gid;
  req.groups = who.groups;
  req.nofile_soft = nofile_soft_;

  // Descriptors: the status file first, then stdin, stdout, stderr as announced.
  size_t next = 0;
  auto take = [&]() -> int {
    if (next >= m.fds.size()) throw_invalid("exec request is missing a descriptor");
    return m.fds[next++].get();
  };
  int status_fd = take();
  bool tty = b.contains("tty") && b["tty"].is_object();
  UniqueFd master, slave;
  if (tty) {
    if (!has("TERM")) req.env.push_back("TERM=xterm-256color");
    master.reset(::open("/dev/pts/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC));
    if (!master) throw_sys("open /dev/pts/ptmx");
    int unlock = 0;
    if (::ioctl(master.get(), TIOCSPTLCK, &unlock) != 0) throw_sys("unlock pty");
    slave.reset(::ioctl(master.get(), TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC));
    if (!slave) throw_sys("open pty peer");
    if (::fchown(slave.get(), who.uid, 5) != 0) ::fchown(slave.get(), who.uid, who.gid);
    winsize ws{};
    ws.ws_row = static_cast<unsigned short>(b["tty"].value("rows", 24));
    ws.ws_col = static_cast<unsigned short>(b["tty"].value("cols", 80));
    ::ioctl(master.get(), TIOCSWINSZ, &ws);
    req.tty_fd = slave.get();
  } else {
    auto stdio = b.value("stdio", std::vector<bool>{false, false, false});
    for (int i = 0; i < 3 && i < static_cast<int>(stdio.size()); i++)
      if (stdio[static_cast<size_t>(i)]) req.stdio[i] = take();
  }

  UniqueFd procs;
  std::string cgname = "x" + std::to_string(e.seq);
  if (h_.cgroup_dir) {
    if (::mkdirat(h_.cgroup_dir.get(), cgname.c_str(), 0755) != 0 && errno != EEXIST)
      throw_sys("create exec cgroup");
    e.cgroup.reset(
        ::openat(h_.cgroup_dir.get(), cgname.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!e.cgroup) throw_sys("open exec cgroup");
    procs.reset(::openat(e.cgroup.get(), "cgroup.procs", O_WRONLY | O_CLOEXEC));
    if (!procs) throw_sys("open exec cgroup.procs");
    req.cgroup_procs_fd = procs.get();
  }

  e.started_at = now_ms();
  SpawnResult r = spawn(req, devnull_.get());
  if (r.pid < 0) {
    if (e.cgroup) ::unlinkat(h_.cgroup_dir.get(), cgname.c_str(), AT_REMOVEDIR);
    initproto::ExitStatus st;
    st.code = r.exit_code;
    st.started_at = st.ended_at = e.started_at;
    st.reason = "failed: " + r.message;
    std::string text = json(st).dump();
    (void)!::pwrite(status_fd, text.data(), text.size(), 0);
    return {{"ok", false},
            {"error", r.message},
            {"code", r.exit_code},
            {"kind", "failed_precondition"}};
  }
  e.pid = r.pid;
  reset_oom_score(r.pid);
  e.status.reset(::fcntl(status_fd, F_DUPFD_CLOEXEC, 3));
  int64_t timeout_ms = b.value("timeout_ms", int64_t{0});
  if (timeout_ms > 0) e.deadline_us = mono_us() + timeout_ms * 1000;
  bool detach = b.value("detach", false);
  if (!detach) {
    e.conn = conn;
    attached_[conn] = e.pid;
  }
  pid_t pid = e.pid;
  by_seq_[e.seq] = pid;
  execs_.emplace(pid, std::move(e));
  if (timeout_ms > 0) rearm_timer();

  json reply = {{"ok", true},
                {"pid", pid},
                {"started_at", execs_[pid].started_at},
                {"argv", execs_[pid].argv}};
  if (tty) {
    slave.reset();
    ipc::send(conn, reply, {master.get()});
    return json();
  }
  return reply;
}

json Supervisor::do_files(ipc::Message& m) {
  if (m.fds.size() != 2) throw_invalid("files request needs two descriptors");
  Identity who = resolve(m.body.value("user", std::string("root")));
  SpawnRequest req;
  req.argv = {"upstream-files", "fileop"};
  req.env = {std::string("PATH=") + kDefaultPath, "HOME=" + who.home};
  req.cwd = "/";
  req.uid = who.uid;
  req.gid = who.gid;
  req.groups = who.groups;
  req.stdio[0] = m.fds[0].get();
  req.stdio[1] = m.fds[1].get();
  req.exec_fd = h_.self_exe.get();
  SpawnResult r = spawn(req, devnull_.get());
  if (r.pid < 0) throw Error(Errc::internal, "cannot start file worker: " + r.message, r.err);
  reset_oom_score(r.pid);
  return {{"ok", true}, {"pid", r.pid}};
}

// A box handed out by the warm pool gets its owner's name: /etc/hostname and /etc/hosts are
// replaced atomically (the kernel's hostname is set by the engine, which may enter our UTS
// namespace; we may not call sethostname).
json Supervisor::do_rename(const std::string& hostname) {
  auto put = [](const std::string& path, const std::string& text) {
    std::string tmp = path + ".upstream-new";
    UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644));
    if (!fd) throw_sys("create " + tmp);
    write_all(fd.get(), text);
    ::fchmod(fd.get(), 0644);
    fd.reset();
    if (::rename(tmp.c_str(), path.c_str()) != 0) throw_sys("rename " + tmp);
  };
  put("/etc/hostname", hostname + "\n");
  put("/etc/hosts", initproto::hosts_file(hostname));
  return {{"ok", true}};
}

json Supervisor::do_kill(const json& body) {
  uint64_t seq = body.at("seq").get<uint64_t>();
  int sig = body.value("signal", SIGKILL);
  bool tree = body.value("tree", true);
  auto it = by_seq_.find(seq);
  if (it == by_seq_.end()) {
    // The exec itself has ended; what it left running is still in its group.
    std::string name = "x" + std::to_string(seq);
    if (!lingering_.count(name) || !tree)
      throw Error(Errc::not_found,
                  "exec " + std::to_string(seq) + " has ended and left no processes");
    Exec left;
    left.seq = seq;
    left.cgroup.reset(
        ::openat(h_.cgroup_dir.get(), name.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!left.cgroup)
      throw Error(Errc::not_found,
                  "exec " + std::to_string(seq) + " has ended and left no processes");
    kill_tree(left, sig);
    return {{"ok", true}, {"leftovers", true}};
  }
  Exec& e = execs_.at(it->second);
  if (sig == SIGKILL) e.killed = true;
  if (tree)
    kill_tree(e, sig);
  else
    ::kill(e.pid, sig);
  return {{"ok", true}};
}

size_t Supervisor::count_procs(const std::string& group) {
  int fd = ::openat(h_.cgroup_dir.get(), (group + "/cgroup.procs").c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  std::string text = read_all(fd, 1 << 20);
  ::close(fd);
  size_t n = 0;
  for (char c : text) n += c == '\n';
  return n;
}

json Supervisor::do_ps() {
  json list = json::array();
  for (const auto& [pid, e] : execs_)
    list.push_back({{"seq", e.seq},
                    {"pid", pid},
                    {"argv", e.argv},
                    {"started_at", e.started_at},
                    {"attached", e.conn >= 0},
                    {"running", true},
                    {"procs", count_procs("x" + std::to_string(e.seq))}});
  retry_lingering();
  for (const auto& name : lingering_)
    list.push_back(
        {{"seq", std::stoull(name.substr(1))}, {"running", false}, {"procs", count_procs(name)}});
  return {{"ok", true}, {"execs", list}};
}

void Supervisor::kill_tree(Exec& e, int sig) {
  if (e.cgroup) {
    if (sig == SIGKILL) {
      int fd = ::openat(e.cgroup.get(), "cgroup.kill", O_WRONLY | O_CLOEXEC);
      if (fd >= 0) {
        bool ok = ::write(fd, "1", 1) == 1;
        ::close(fd);
        if (ok) return;
      }
    }
    // Any other signal: freeze the group so nothing forks while we signal each member.
    int freeze = ::openat(e.cgroup.get(), "cgroup.freeze", O_WRONLY | O_CLOEXEC);
    if (freeze >= 0) (void)!::write(freeze, "1", 1);
    for (int round = 0; round < 3; round++) {
      int procs = ::openat(e.cgroup.get(), "cgroup.procs", O_RDONLY | O_CLOEXEC);
      if (procs < 0) break;
      std::string text = read_all(procs);
      ::close(procs);
      for (const auto& line : split(text, '\n'))
        if (!line.empty()) ::kill(std::atoi(line.c_str()), sig);
      if (freeze >= 0) break;
    }
    if (freeze >= 0) {
      (void)!::pwrite(freeze, "0", 1, 0);
      ::close(freeze);
    }
    return;
  }
  ::kill(-e.pid, sig);
  ::kill(e.pid, sig);
}

void Supervisor::on_signal() {
  signalfd_siginfo si;
  while (::read(sigfd_.get(), &si, sizeof si) == sizeof si) {
    int sig = static_cast<int>(si.ssi_signo);
    if (sig == SIGCHLD) continue;  // reaped below
    // Signals from inside the box (a nonzero sender pid in our namespace) are not commands to us.
    if (si.ssi_pid != 0) continue;
    if (sig == SIGTERM) {
      begin_stop(10'000, -1);
    } else {
      ::kill(-1, sig);  // forwarded to every process in the box
    }
  }
  reap();
}

void Supervisor::reap() {
  for (;;) {
    int status;
    rusage ru{};
    pid_t pid = ::wait4(-1, &status, WNOHANG, &ru);
    if (pid > 0) {
      auto it = execs_.find(pid);
      if (it != execs_.end()) {
        finish(it->second, status, ru);
        by_seq_.erase(it->second.seq);
        execs_.erase(it);
      }
      continue;
    }
    retry_lingering();
    if (pid < 0 && errno == ECHILD) maybe_finish_stop(true);
    return;
  }
}

void Supervisor::finish(Exec& e, int status, const rusage& ru) {
  initproto::ExitStatus st;
  st.started_at = e.started_at;
  st.ended_at = now_ms();
  if (WIFEXITED(status)) {
    st.code = WEXITSTATUS(status);
    st.reason = "exited";
  } else if (WIFSIGNALED(status)) {
    st.signal = WTERMSIG(status);
    st.code = 128 + st.signal;
    st.reason = "signaled";
  }
  if (e.timed_out) {
    st.timed_out = true;
    st.code = 124;
    st.reason = "timeout";
  } else if (!e.reason_override.empty()) {
    st.killed = true;
    st.reason = e.reason_override;
  } else if (e.killed && st.signal == SIGKILL) {
    st.killed = true;
    st.reason = "killed";
  }
  st.max_rss_kb = static_cast<uint64_t>(ru.ru_maxrss);
  st.cpu_us = static_cast<uint64_t>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1'000'000 +
              static_cast<uint64_t>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
  if (e.cgroup) {
    int fd = ::openat(e.cgroup.get(), "cpu.stat", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
      std::string text = read_all(fd, 4096);
      ::close(fd);
      for (const auto& line : split(text, '\n'))
        if (starts_with(line, "usage_usec "))
          st.cpu_us = std::strtoull(line.c_str() + 11, nullptr, 10);
    }
  }
  json j = st;
  std::string text = j.dump();
  if (e.status) {
    (void)!::pwrite(e.status.get(), text.data(), text.size(), 0);
    (void)!::ftruncate(e.status.get(), static_cast<off_t>(text.size()));
  }
  if (e.conn >= 0) {
    json ev = j;
    ev["event"] = "exit";
    try {
      ipc::send(e.conn, ev);
    } catch (const Error&) {
    }
    attached_.erase(e.conn);
    e.conn = -1;
  }
  if (e.cgroup) {
    std::string name = "x" + std::to_string(e.seq);
    e.cgroup.reset();
    if (::unlinkat(h_.cgroup_dir.get(), name.c_str(), AT_REMOVEDIR) != 0 && errno == EBUSY)
      lingering_.insert(name);  // leftover background processes; removed once they are gone
  }
  if (e.deadline_us) rearm_timer();
}

void Supervisor::reset_oom_score(pid_t pid) {
  // The child shared our (non-dumpable) memory until its exec, so it could not do this itself;
  // it has just exec'd, long before it can have started children of its own.
  if (!oom_protected_) return;
  int fd =
      ::open(("/proc/" + std::to_string(pid) + "/oom_score_adj").c_str(), O_WRONLY | O_CLOEXEC);
  if (fd >= 0) {
    (void)!::write(fd, "0", 1);
    ::close(fd);
  }
}

void Supervisor::retry_lingering() {
  for (auto it = lingering_.begin(); it != lingering_.end();) {
    if (::unlinkat(h_.cgroup_dir.get(), it->c_str(), AT_REMOVEDIR) == 0 || errno == ENOENT)
      it = lingering_.erase(it);
    else
      ++it;
  }
}

void Supervisor::rearm_timer() {
  int64_t next = 0;
  for (const auto& [pid, e] : execs_)
    if (e.deadline_us && !e.timed_out && (!next || e.deadline_us < next)) next = e.deadline_us;
  if (stopping_ && !stop_killed_ && (!next || stop_deadline_us_ < next)) next = stop_deadline_us_;
  itimerspec its{};
  if (next) {
    int64_t delta = std::max<int64_t>(next - mono_us(), 1);
    its.it_value.tv_sec = delta / 1'000'000;
    its.it_value.tv_nsec = (delta % 1'000'000) * 1000;
  }
  ::timerfd_settime(timer_.get(), 0, &its, nullptr);
}

void Supervisor::on_timer() {
  uint64_t ticks;
  (void)!::read(timer_.get(), &ticks, sizeof ticks);
  int64_t now = mono_us();
  for (auto& [pid, e] : execs_)
    if (e.deadline_us && !e.timed_out && e.deadline_us <= now) {
      e.timed_out = true;
      kill_tree(e, SIGKILL);
    }
  if (stopping_ && !stop_killed_ && stop_deadline_us_ <= now) {
    stop_killed_ = true;
    ::kill(-1, SIGKILL);
  }
  rearm_timer();
}

void Supervisor::begin_stop(int64_t grace_ms, int reply_conn) {
  if (reply_conn >= 0) stop_waiters_.push_back(reply_conn);
  if (!stopping_) {
    stopping_ = true;
    for (auto& [pid, e] : execs_) e.reason_override = "box-stopped";
    ::close(h_.listen_sock.release());  // no new connections; existing ones get answers
    if (grace_ms <= 0) {
      stop_killed_ = true;
      ::kill(-1, SIGKILL);
    } else {
      ::kill(-1, SIGTERM);
      stop_deadline_us_ = mono_us() + grace_ms * 1000;
      rearm_timer();
    }
  }
  reap();
}

void Supervisor::maybe_finish_stop(bool no_children) {
  if (!stopping_ || !no_children) return;
  for (int c : stop_waiters_) {
    if (!conns_.count(c)) continue;
    try {
      ipc::send(c, {{"ok", true}, {"stopped", true}});
    } catch (const Error&) {
    }
  }
  ::_exit(0);
}

}  // namespace

int run_supervisor(const initproto::Config& cfg, BoxHandles handles) {
  Supervisor s(cfg, std::move(handles));
  return s.run();
}

}  // namespace upstream::init
