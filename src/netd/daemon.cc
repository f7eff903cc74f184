#include "netd/netd.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "common/error.h"
#include "common/fd.h"
#include "common/fs.h"
#include "common/ipc.h"
#include "common/log.h"
#include "common/proc.h"
#include "netd/internal.h"

namespace upstream::netd {

// Set when a newer netd took over: listeners close (their queued connections move to the new
// netd's sockets, which share the ports), connections under way are served to their end.
std::atomic<bool> retired{false};
std::atomic<int> active{0};  // connections and queries being served

std::string run_dir() { return "/run/upstream/net"; }
std::string policy_path(uint32_t slot) { return run_dir() + "/" + std::to_string(slot) + ".json"; }

std::vector<uint32_t> policy_slots() { return numbered_files(run_dir(), ".json"); }

// True if somebody holds the lock at `path` (taking it ourselves releases it at once).
bool lock_held(const std::string& path) { return !FileLock::try_lock(path); }

// What netd.json says of the running netd, if one serves: its ports, and whether this build
// should take over from it (a netd that speaks an older protocol), which it does by a hand-over.
struct Running {
  Ports ports;
  int protocol = 0;
  int64_t built = 0;  // the modification time (ns) of its executable
};

int64_t built_ns(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return 0;
  return static_cast<int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
}

std::optional<Running> read_running() {
  auto text = try_read_file(run_dir() + "/netd.json");
  if (!text) return std::nullopt;
  try {
    json j = json::parse(*text);
    Running r;
    r.ports = {j.at("pid").get<int>(), j.at("proxy").get<uint16_t>(), j.at("dns").get<uint16_t>()};
    r.protocol = j.value("protocol", 0);
    r.built = j.value("built", int64_t{0});
    if (::kill(r.ports.pid, 0) != 0 || !lock_held(run_dir() + "/netd.lock")) return std::nullopt;
    return r;
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

// The protocol this build's netd speaks (policy files, the firewall's redirects, the hand-over).
// A running netd of a newer protocol, or of the same one and a build at least as recent, is used
// whichever build it is; an older one is taken over from, once, by a hand-over (so two
// installations of different builds never take turns). UPSTREAM_NETD_PROTOCOL stands in for a
// newer protocol in the hand-over tests.
int protocol() {
  static const int p = [] {
    const char* v = std::getenv("UPSTREAM_NETD_PROTOCOL");
    return v && *v ? std::max(2, std::atoi(v)) : 2;
  }();
  return p;
}

// Whether a running netd serves this build as it is (else this build takes over from it).
bool serves_us(const Running& r, const std::string& exe) {
  if (r.protocol != protocol()) return r.protocol > protocol();
  return r.built >= built_ns(exe);
}

std::optional<Ports> read_ports(const std::string& exe) {
  auto r = read_running();
  if (!r || !serves_us(*r, exe)) return std::nullopt;
  return r->ports;
}

// Binds `port` if it is free (a restarted netd keeps its predecessor's ports: the firewall and
// the kernel's connection tracking still point there), else any port; with `exact`, that port
// or nothing (a hand-over shares its predecessor's ports: every listener has SO_REUSEPORT).
UniqueFd listen_any(int type, uint16_t& port, bool exact = false) {
  UniqueFd s(::socket(AF_INET, type | SOCK_CLOEXEC, 0));
  if (!s) throw_sys("socket");
  int one = 1;
  ::setsockopt(s.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  ::setsockopt(s.get(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  if (::bind(s.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    if (exact) throw_sys("bind port " + std::to_string(port) + " of the netd taken over from");
    sa.sin_port = 0;
    if (::bind(s.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) throw_sys("bind");
  }
  if (type == SOCK_STREAM && ::listen(s.get(), 1024) != 0) throw_sys("listen");
  socklen_t len = sizeof sa;
  ::getsockname(s.get(), reinterpret_cast<sockaddr*>(&sa), &len);
  port = ntohs(sa.sin_port);
  return s;
}

Ports ensure_running(const std::string& exe) {
  make_dirs(run_dir(), 0700);
  auto running = read_running();
  if (running && serves_us(*running, exe)) return running->ports;
  // A netd from before hand-overs existed cannot hand over: it is replaced, as it used to be.
  if (running && running->protocol < 2) {
    ::kill(running->ports.pid, SIGTERM);
    for (int i = 0; i < 200 && lock_held(run_dir() + "/netd.lock"); i++)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    running.reset();
  }
  std::vector<std::string> argv{"upstream", "netd"};
  if (running) argv.push_back("--take-over");
  start_daemon(exe, argv, run_dir() + "/netd.log");
  for (int i = 0; i < 2000; i++) {
    if (auto p = read_ports(exe)) return *p;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  throw Error(Errc::unavailable,
              "the network daemon (upstream netd) did not start; see " + run_dir() + "/netd.log");
}

json read_stats(const std::string& path) {
  BoxStats s;
  if (auto text = try_read_file(path)) try {
      s = stats_from_json(json::parse(*text));
    } catch (const std::exception& e) {
      log(LogLevel::warning, "the counters in " + path + " do not parse: " + e.what());
    }
  return stats_json(s);
}

std::string handover_path(const std::string& dir) { return dir + "/netd.handover"; }

// The hand-over socket: a successor connects and asks; it gets the resolver's socket, and this
// netd retires.
void serve_handover(const std::string& dir, std::shared_ptr<UniqueFd> resolver,
                    std::function<void()> retire) {
  std::string path = handover_path(dir);
  UniqueFd l(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path.c_str());
  ::unlink(path.c_str());
  if (!l || ::bind(l.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 ||
      ::listen(l.get(), 4) != 0) {
    log_errno(LogLevel::error, "no hand-over socket at " + path, errno);
    return;
  }
  ::chmod(path.c_str(), 0600);
  std::thread([l = std::move(l), resolver, retire] {
    while (true) {
      UniqueFd c(::accept4(l.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (!c) continue;
      try {
        auto m = ipc::recv_wait(c.get(), 5000);
        if (!m || m->body.value("op", "") != "hand-over") continue;
        ipc::send(c.get(), {{"ok", true}}, {resolver->get()});
        retire();
        return;
      } catch (const std::exception& e) {
        log(LogLevel::warning, std::string("a hand-over failed: ") + e.what());
      }
    }
  }).detach();
}

// The predecessor's resolver socket, asked for over its hand-over socket (which retires it);
// empty if it has none (it is then told by SIGUSR2).
UniqueFd receive_resolver(const std::string& dir) {
  try {
    UniqueFd c = ipc::connect(handover_path(dir));
    ipc::send(c.get(), {{"op", "hand-over"}});
    auto m = ipc::recv_wait(c.get(), 5000);
    if (m && m->body.value("ok", false) && m->fds.size() == 1) return std::move(m->fds[0]);
  } catch (const std::exception& e) {
    log(LogLevel::warning,
        std::string("no hand-over from the running netd (it is told by SIGUSR2): ") + e.what());
  }
  return UniqueFd();
}

int serve(const std::string& dir, bool take_over) {
  set_log_name("netd");
  make_dirs(dir, 0700);
  // SIGUSR2 (from a successor) is taken by a thread of its own.
  sigset_t usr2;
  sigemptyset(&usr2);
  sigaddset(&usr2, SIGUSR2);
  pthread_sigmask(SIG_BLOCK, &usr2, nullptr);
  std::optional<FileLock> lock = FileLock::try_lock(dir + "/netd.lock");
  std::optional<Running> predecessor;
  if (!lock) {
    predecessor = read_running();
    // One runs already; only a newer successor takes over.
    if (!take_over || !predecessor || serves_us(*predecessor, self_exe())) return 0;
  }
  ::signal(SIGPIPE, SIG_IGN);
  // Connections queued on a listener that closes move to another listener of its port (the
  // successor's), instead of being reset.
  if (UniqueFd f(::open("/proc/sys/net/ipv4/tcp_migrate_req", O_WRONLY | O_CLOEXEC)); f)
    (void)!::write(f.get(), "1\n", 2);
  Ports ports;
  if (auto text = try_read_file(dir + "/netd.json")) try {
      json j = json::parse(*text);
      ports.proxy = j.value("proxy", uint16_t{0});
      ports.dns = j.value("dns", uint16_t{0});
    } catch (const std::exception& e) {
      log(LogLevel::warning,
          "netd.json does not parse (new ports are taken): " + std::string(e.what()));
    }
  UniqueFd proxy = listen_any(SOCK_STREAM, ports.proxy, predecessor.has_value());
  // The resolver's socket itself comes from the predecessor (a datagram queued on it is answered
  // by whichever netd reads it); TCP listeners share their ports instead.
  std::shared_ptr<UniqueFd> resolver;
  bool handed = false;
  if (predecessor) {
    if (UniqueFd dns = receive_resolver(dir)) {
      resolver = std::make_shared<UniqueFd>(std::move(dns));
      handed = true;
    }
  }
  if (!resolver)
    resolver =
        std::make_shared<UniqueFd>(listen_any(SOCK_DGRAM, ports.dns, predecessor.has_value()));
  auto announce = [&] {
    write_file_atomic(dir + "/netd.json",
                      json{{"pid", ::getpid()},
                           {"proxy", ports.proxy},
                           {"dns", ports.dns},
                           {"protocol", protocol()},
                           {"built", built_ns(self_exe())}}
                          .dump(),
                      0600);
  };
  if (!predecessor) announce();
  std::thread([] {
    while (!retired) {
      std::this_thread::sleep_for(std::chrono::milliseconds(250));
      counters.flush();
    }
  }).detach();
  std::thread(manage_exposures).detach();
  std::thread([resolver] {
    char buf[4096];
    int fd = resolver->get();
    while (!retired) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) continue;
      sockaddr_in peer{};
      socklen_t len = sizeof peer;
      ssize_t n =
          ::recvfrom(fd, buf, sizeof buf, MSG_DONTWAIT, reinterpret_cast<sockaddr*>(&peer), &len);
      if (n <= 0 || active.load() > kMaxActive) continue;
      active++;
      // The socket lives while answers are being sent from it (after a hand-over too).
      std::thread([resolver, msg = std::string(buf, static_cast<size_t>(n)), peer] {
        try {
          answer_query(resolver->get(), msg, peer);
        } catch (const std::exception& e) {
          log(LogLevel::warning, std::string("a DNS query failed: ") + e.what());
        }
        active--;
      }).detach();
    }
  }).detach();
  // Retiring: stop listening (the successor has bound the same ports, or holds the resolver's
  // socket), give up the lock, serve what is under way (for at most 10 minutes), then leave.
  // Asked by a successor over the hand-over socket, or by SIGUSR2.
  std::once_flag retire_once;
  auto retire = [&lock, proxy_fd = proxy.get(), &retire_once] {
    std::call_once(retire_once, [&] {
      retired = true;
      counters.flush();
      ::shutdown(proxy_fd, SHUT_RDWR);
      lock.reset();
      log(LogLevel::info, "handed over to a newer netd; finishing " +
                              std::to_string(active.load()) + " connections");
      std::thread([] {
        for (int i = 0; i < 6000 && active.load() > 0; i++)
          std::this_thread::sleep_for(std::chrono::milliseconds(100));
        counters.flush();
        ::_exit(0);
      }).detach();
    });
  };
  std::thread([retire] {
    int sig = 0;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR2);
    while (sigwait(&set, &sig) != 0) {
    }
    retire();
  }).detach();
  if (!predecessor) serve_handover(dir, resolver, retire);
  if (predecessor) {
    // Both serve now; the predecessor stops listening and hands over the lock (told already if it
    // handed over the resolver's socket).
    if (!handed) ::kill(predecessor->ports.pid, SIGUSR2);
    lock.emplace(dir + "/netd.lock", 30'000);
    serve_handover(dir, resolver, retire);
    announce();
    log(LogLevel::info, "took over from netd " + std::to_string(predecessor->ports.pid) +
                            " (protocol " + std::to_string(predecessor->protocol) + ")");
  }
  // A later hand-over sends the resolver's socket from the hand-over thread, which holds it now.
  resolver.reset();
  while (true) {
    int c = ::accept4(proxy.get(), nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) {
      if (retired) pause();  // the retiring thread ends the process
      if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE) continue;
      throw_sys("accept");
    }
    if (active.load() > kMaxActive) {
      ::close(c);
      continue;
    }
    active++;
    no_delay(c);
    std::thread([c] {
      try {
        handle(UniqueFd(c));
      } catch (const std::exception& e) {
        log(LogLevel::warning, std::string("a proxied connection failed: ") + e.what());
      }
      active--;
    }).detach();
  }
}

}  // namespace upstream::netd
