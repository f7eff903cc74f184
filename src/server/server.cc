#include "server/server.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <condition_variable>
#include <iostream>
#include <limits>
#include <list>
#include <sstream>
#include <thread>

#include "api/routes.h"
#include "common/error.h"
#include "common/strings.h"
#include "common/time.h"
#include "common/url.h"

namespace upstream::server {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using nlohmann::json;

std::pair<std::string, uint16_t> parse_listen(const std::string& text) {
  auto colon = text.rfind(':');
  if (colon == std::string::npos)
    throw_invalid("listen address '" + text + "' must be HOST:PORT, e.g. 127.0.0.1:8420");
  std::string host = text.substr(0, colon), port = text.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  if (host.empty()) host = "0.0.0.0";
  if (port.empty() || port.size() > 5 ||
      port.find_first_not_of("0123456789") != std::string::npos || std::stoul(port) > 65535)
    throw_invalid("listen address '" + text + "': '" + port + "' is not a port number");
  boost::system::error_code ec;
  net::ip::make_address(host, ec);
  if (ec) throw_invalid("listen address '" + text + "': '" + host + "' is not an IP address");
  return {host, static_cast<uint16_t>(std::stoul(port))};
}

bool is_loopback(const std::string& host) {
  boost::system::error_code ec;
  auto a = net::ip::make_address(host, ec);
  return !ec && a.is_loopback();
}

namespace {

// Work done in the background every `interval_ms` (0: never) and whenever poked; stopped and
// joined when it goes out of scope.
class Background {
 public:
  Background(int64_t interval_ms, std::function<void()> f) {
    if (interval_ms <= 0) return;
    thread_ = std::thread([this, interval_ms, f = std::move(f)] {
      std::unique_lock lk(mu_);
      for (;;) {
        cv_.wait_for(lk, std::chrono::milliseconds(interval_ms), [&] { return stop_ || poked_; });
        if (stop_) return;
        poked_ = false;
        lk.unlock();
        f();
        lk.lock();
      }
    });
  }
  void poke() {
    std::lock_guard g(mu_);
    poked_ = true;
    cv_.notify_all();
  }
  ~Background() {
    {
      std::lock_guard g(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false, poked_ = false;
  std::thread thread_;
};

class Server;

// Writes straight to the connection's socket (no async operation is pending on it while a worker
// holds the connection), giving up when the client takes no data for write_timeout.
class SocketResponder : public Responder {
 public:
  SocketResponder(int fd, bool keep_alive, int timeout_ms)
      : fd_(fd), keep_alive_(keep_alive), timeout_ms_(timeout_ms) {}

  void send(int status, const std::string& content_type, const std::string& body,
            const std::vector<std::pair<std::string, std::string>>& headers) override {
    http::response<http::string_body> res{static_cast<http::status>(status), 11};
    res.set(http::field::server, "upstream/" UPSTREAM_VERSION);
    res.set(http::field::content_type, content_type);
    for (const auto& [k, v] : headers) res.set(k, v);
    res.keep_alive(keep_alive_);
    res.body() = body;
    res.prepare_payload();
    std::ostringstream os;
    os << res;
    status_ = status;
    started_ = true;
    ok_ = write(os.str());
    bytes_ += body.size();
  }

  void begin(int status, const std::string& content_type) override {
    http::response<http::empty_body> res{static_cast<http::status>(status), 11};
    res.set(http::field::server, "upstream/" UPSTREAM_VERSION);
    res.set(http::field::content_type, content_type);
    res.set(http::field::cache_control, "no-cache");
    res.set(http::field::transfer_encoding, "chunked");
    res.keep_alive(keep_alive_);
    std::ostringstream os;
    os << res.base();
    status_ = status;
    started_ = true;
    ok_ = write(os.str());
  }

  bool chunk(std::string_view data) override {
    if (!ok_) return false;
    if (data.empty()) return true;
    char head[32];
    int n = std::snprintf(head, sizeof head, "%zx\r\n", data.size());
    std::string out(head, static_cast<size_t>(n));
    out.append(data);
    out += "\r\n";
    bytes_ += data.size();
    return ok_ = write(out);
  }

  void end() override {
    if (ok_) ok_ = write("0\r\n\r\n");
    complete_ = ok_;
  }

  bool started() const override { return started_; }
  bool ok() const { return ok_; }
  int status() const { return status_; }
  uint64_t bytes() const { return bytes_; }

 private:
  bool write(std::string_view d) {
    while (!d.empty()) {
      ssize_t n = ::send(fd_, d.data(), d.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) {
        d.remove_prefix(static_cast<size_t>(n));
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        pollfd p{fd_, POLLOUT, 0};
        int r = ::poll(&p, 1, timeout_ms_);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return false;
        continue;
      }
      return false;
    }
    return true;
  }

  int fd_;
  bool keep_alive_;
  int timeout_ms_;
  bool started_ = false, ok_ = true, complete_ = false;
  int status_ = 0;
  uint64_t bytes_ = 0;
};

class Server {
 public:
  Server(Api& api, const ServeOptions& opts) : api_(api), opts_(opts) {}

  Api& api_;
  const ServeOptions& opts_;
  std::atomic<size_t> connections_{0};
  std::atomic<bool> stopping_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  size_t workers_ = 0;
  std::mutex log_mu_;
  // Last, so that it is destroyed first: the connections its pending handlers still hold use
  // the members above as they go.
  net::io_context ioc_{1};

  void log(const json& j) {
    if (!opts_.access_log) return;
    std::string line = j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
    std::lock_guard g(log_mu_);
    std::cerr << line << std::flush;
  }
};

template <class Protocol>
class Conn : public std::enable_shared_from_this<Conn<Protocol>> {
 public:
  using Stream = beast::basic_stream<Protocol>;
  Conn(Server& srv, typename Protocol::socket sock, std::string remote)
      : srv_(srv), stream_(std::move(sock)), remote_(std::move(remote)) {
    srv_.connections_++;
  }
  ~Conn() { srv_.connections_--; }

  void start() { wait_request(); }

 private:
  // Keep-alive: wait (idle_timeout) for the first byte of the next request, then give the client
  // header_timeout for the whole header.
  void wait_request() {
    if (srv_.stopping_) return close();
    if (buf_.size() > 0) return read_header();
    stream_.expires_after(std::chrono::seconds(srv_.opts_.idle_timeout_s));
    auto self = this->shared_from_this();
    stream_.async_read_some(buf_.prepare(8192), [self](beast::error_code ec, size_t n) {
      if (ec) return self->close();
      self->buf_.commit(n);
      self->read_header();
    });
  }

  void read_header() {
    hp_.emplace();
    hp_->header_limit(16 * 1024);
    hp_->body_limit(std::numeric_limits<std::uint64_t>::max());  // decided after the header
    stream_.expires_after(std::chrono::seconds(srv_.opts_.header_timeout_s));
    auto self = this->shared_from_this();
    http::async_read_header(stream_, buf_, *hp_, [self](beast::error_code ec, size_t) {
      if (ec == http::error::end_of_stream || ec == beast::error::timeout ||
          ec == net::error::eof || ec == net::error::operation_aborted)
        return self->close();
      if (ec) return self->reject(400, "bad_request", "malformed HTTP request: " + ec.message());
      self->on_header();
    });
  }

  void on_header() {
    auto& h = hp_->get();
    started_us_ = mono_us();
    method_ = std::string(h.method_string());
    target_ = std::string(h.target());
    auto q = target_.find('?');
    std::string raw_path = target_.substr(0, q);
    uint64_t limit = srv_.api_.body_limit(method_, raw_path);
    auto len = hp_->content_length();
    if (len && *len > limit)
      return reject(413, "payload_too_large",
                    "the request body of " + std::to_string(*len) + " bytes is over the limit of " +
                        std::to_string(limit) + " bytes");
    if (beast::iequals(h[http::field::expect], "100-continue")) {
      static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
      (void)!::send(native(), cont, sizeof cont - 1, MSG_NOSIGNAL);
    }
    bool upload = limit > srv_.api_.body_limit("POST", "/");
    auto self = this->shared_from_this();
    stream_.expires_after(std::chrono::seconds(srv_.opts_.body_timeout_s));
    auto done = [self](beast::error_code ec, size_t) {
      if (ec == http::error::body_limit)
        return self->reject(413, "payload_too_large", "the request body is over the limit");
      if (ec == beast::error::timeout || ec == net::error::eof ||
          ec == http::error::partial_message)
        return self->close();
      if (ec) return self->reject(400, "bad_request", "malformed HTTP request: " + ec.message());
      self->dispatch();
    };
    if (upload) {
      fp_.emplace(std::move(*hp_));
      fp_->body_limit(limit);
      int fd = ::open(srv_.opts_.spool_dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
      if (fd < 0) return reject(500, "internal", "cannot spool the upload: " + errno_string(errno));
      beast::file f;
      f.native_handle(fd);
      beast::error_code ec;
      fp_->get().body().reset(std::move(f), ec);
      http::async_read(stream_, buf_, *fp_, done);
    } else {
      sp_.emplace(std::move(*hp_));
      sp_->body_limit(limit);
      http::async_read(stream_, buf_, *sp_, done);
    }
  }

  // Answers without a handler and closes (the rest of the request is not read).
  void reject(int status, const std::string& code, const std::string& message) {
    SocketResponder res(native(), false, srv_.opts_.write_timeout_s * 1000);
    res.send(status, "application/json",
             json{{"code", code}, {"message", message}}.dump(-1, ' ', false,
                                                             json::error_handler_t::replace),
             {});
    srv_.log({{"time", format_time(now_ms())},
              {"remote", remote_},
              {"method", method_},
              {"path", target_.substr(0, target_.find('?'))},
              {"status", status},
              {"error", code}});
    linger_close();
  }

  // After an early reply, the client may still be sending the body it announced. Closing with
  // unread data makes the kernel send a reset, which can destroy the reply before the client read
  // it; so stop sending, read and drop what comes for a moment, then close.
  void linger_close() {
    beast::error_code ec;
    stream_.socket().shutdown(Protocol::socket::shutdown_send, ec);
    buf_.clear();
    drained_ = 0;
    stream_.expires_after(std::chrono::seconds(2));
    drain();
  }

  void drain() {
    auto self = this->shared_from_this();
    stream_.async_read_some(buf_.prepare(65536), [self](beast::error_code ec, size_t n) {
      self->drained_ += n;
      self->buf_.clear();
      if (ec || self->drained_ > (64u << 20)) return self->close();
      self->drain();
    });
  }

  int native() { return stream_.socket().native_handle(); }

  void dispatch() {
    {
      std::lock_guard g(srv_.mu_);
      if (srv_.workers_ >= srv_.opts_.max_inflight) {
        return reject(503, "unavailable", "the server is handling too many requests; retry");
      }
      srv_.workers_++;
    }
    stream_.expires_never();
    auto self = this->shared_from_this();
    std::thread([self] {
      self->work();
      std::lock_guard g(self->srv_.mu_);
      self->srv_.workers_--;
      self->srv_.cv_.notify_all();
    }).detach();
  }

  void work() {
    Request req;
    req.method = method_;
    req.target = target_;
    req.remote = remote_;
    req.socket_fd = native();
    bool keep_alive;
    int body_fd = -1;
    auto fill = [&](auto& msg) {
      req.authorization = std::string(msg[http::field::authorization]);
      req.host = std::string(msg[http::field::host]);
      if (msg.find(http::field::origin) != msg.end())
        req.origin = std::string(msg[http::field::origin]);
      req.accept = std::string(msg[http::field::accept]);
      req.content_type = std::string(msg[http::field::content_type]);
      keep_alive = msg.keep_alive();
    };
    if (fp_) {
      fill(fp_->get());
      body_fd = fp_->get().body().file().native_handle();
      ::lseek(body_fd, 0, SEEK_SET);
      req.body_fd = body_fd;
    } else {
      fill(sp_->get());
      req.body = std::move(sp_->get().body());
    }
    api_inflight(+1);
    SocketResponder res(native(), keep_alive && !srv_.stopping_, srv_.opts_.write_timeout_s * 1000);
    bool aborted = false;
    std::string route = "?";
    auto q = target_.find('?');
    auto path = url_decode(std::string_view(target_).substr(0, q), false);
    try {
      if (!path || path->empty() || (*path)[0] != '/')
        throw ApiError(400, "bad_request", "the request target is not a valid path");
      req.path = *path;
      route = api::route_label(method_, req.path);
      if (q != std::string::npos) {
        for (const auto& kv : split(std::string_view(target_).substr(q + 1), '&')) {
          if (kv.empty()) continue;
          auto eq = kv.find('=');
          auto k = url_decode(std::string_view(kv).substr(0, eq), true);
          auto v =
              url_decode(eq == std::string::npos ? "" : std::string_view(kv).substr(eq + 1), true);
          if (!k || !v) throw ApiError(400, "bad_request", "malformed query string");
          req.query.emplace(*k, *v);
        }
      }
      srv_.api_.handle(req, res);
    } catch (const ApiError& e) {
      if (e.status == 0) {
        aborted = true;
      } else if (!res.started()) {
        auto [status, body] = Api::error_body(e);
        res.send(status, "application/json", body, {});
      } else {
        aborted = true;
      }
    } catch (const std::exception& e) {
      if (!res.started()) {
        auto [status, body] = Api::error_body(e);
        res.send(status, "application/json", body, {});
      } else {
        aborted = true;
      }
    }
    api_inflight(-1);
    double secs = static_cast<double>(mono_us() - started_us_) / 1e6;
    srv_.api_.metrics().request(route, method_, res.status(), secs);
    json entry = {{"time", format_time(now_ms())},
                  {"remote", remote_},
                  {"method", method_},
                  {"path", req.path.empty() ? target_.substr(0, q) : req.path},
                  {"route", route},
                  {"status", res.status()},
                  {"ms", static_cast<double>(static_cast<int64_t>(secs * 1e5)) / 100.0},
                  {"bytes", res.bytes()},
                  {"aborted", aborted}};
    // Who called: the key's public id and its tenant (never the secret).
    if (!req.key_id.empty()) entry["key"] = req.key_id;
    if (!req.key_tenant.empty()) entry["tenant"] = req.key_tenant;
    srv_.log(entry);
    fp_.reset();
    sp_.reset();
    hp_.reset();
    if (aborted || !res.ok() || !keep_alive || srv_.stopping_) {
      net::post(stream_.get_executor(), [self = this->shared_from_this()] { self->close(); });
      return;
    }
    net::post(stream_.get_executor(), [self = this->shared_from_this()] { self->wait_request(); });
  }

  void api_inflight(int d) {
    if (d > 0)
      srv_.api_.inflight++;
    else
      srv_.api_.inflight--;
  }

  void close() {
    beast::error_code ec;
    stream_.socket().shutdown(Protocol::socket::shutdown_send, ec);
    stream_.close();
  }

  Server& srv_;
  Stream stream_;
  std::string remote_;
  beast::flat_buffer buf_;
  std::optional<http::request_parser<http::empty_body>> hp_;
  std::optional<http::request_parser<http::string_body>> sp_;
  std::optional<http::request_parser<http::file_body>> fp_;
  std::string method_, target_;
  int64_t started_us_ = 0;
  uint64_t drained_ = 0;
};

template <class Acceptor>
void accept_loop(Server& srv, Acceptor& acc) {
  acc.async_accept([&srv, &acc](beast::error_code ec, typename Acceptor::protocol_type::socket s) {
    if (ec == net::error::operation_aborted || srv.stopping_) return;
    if (!ec) {
      ::fcntl(s.native_handle(), F_SETFD, FD_CLOEXEC);
      if (srv.connections_ >= srv.opts_.max_connections) {
        beast::error_code ignored;
        s.close(ignored);
      } else {
        std::string remote;
        if constexpr (std::is_same_v<typename Acceptor::protocol_type, net::ip::tcp>) {
          s.set_option(net::ip::tcp::no_delay(true), ec);
          auto ep = s.remote_endpoint(ec);
          if (!ec) remote = ep.address().to_string() + ":" + std::to_string(ep.port());
        } else {
          remote = "unix";
        }
        std::make_shared<Conn<typename Acceptor::protocol_type>>(srv, std::move(s), remote)
            ->start();
      }
    }
    accept_loop(srv, acc);
  });
}

}  // namespace

// The TCP listener of --listen HOST:PORT, accepting; its port (the one chosen for port 0).
uint16_t listen_tcp(Server& srv, const ServeOptions& opts,
                    std::optional<net::ip::tcp::acceptor>& tcp) {
  auto [host, p] = parse_listen(opts.listen);
  net::ip::tcp::endpoint ep(net::ip::make_address(host), p);
  tcp.emplace(srv.ioc_);
  boost::system::error_code ec;
  tcp->open(ep.protocol(), ec);
  if (!ec) tcp->set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) tcp->bind(ep, ec);
  if (!ec) tcp->listen(1024, ec);
  if (ec) throw Error(Errc::unavailable, "cannot listen on " + opts.listen + ": " + ec.message());
  ::fcntl(tcp->native_handle(), F_SETFD, FD_CLOEXEC);
  accept_loop(srv, *tcp);
  return tcp->local_endpoint().port();
}

// The unix socket of --socket PATH (mode 0600), accepting.
void listen_unix(Server& srv, const ServeOptions& opts,
                 std::optional<net::local::stream_protocol::acceptor>& unix_acc) {
  // A stale socket file from an earlier run is replaced; anything else there is not.
  struct stat st {};
  if (::lstat(opts.socket.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode))
      throw_invalid("--socket " + opts.socket + " exists and is not a socket");
    ::unlink(opts.socket.c_str());
  }
  unix_acc.emplace(srv.ioc_);
  boost::system::error_code ec;
  net::local::stream_protocol::endpoint ep(opts.socket);
  unix_acc->open(ep.protocol(), ec);
  if (!ec) unix_acc->bind(ep, ec);
  if (!ec) unix_acc->listen(1024, ec);
  if (ec) throw Error(Errc::unavailable, "cannot listen on " + opts.socket + ": " + ec.message());
  ::fcntl(unix_acc->native_handle(), F_SETFD, FD_CLOEXEC);
  ::chmod(opts.socket.c_str(), 0600);
  accept_loop(srv, *unix_acc);
}

void serve(Api& api, const ServeOptions& opts, const std::function<void(uint16_t)>& on_ready) {
  Server srv(api, opts);
  std::optional<net::ip::tcp::acceptor> tcp;
  std::optional<net::local::stream_protocol::acceptor> unix_acc;
  uint16_t port = 0;
  if (!opts.listen.empty()) port = listen_tcp(srv, opts, tcp);
  if (!opts.socket.empty()) listen_unix(srv, opts, unix_acc);

  net::signal_set signals(srv.ioc_, SIGTERM, SIGINT);
  signals.async_wait([&](beast::error_code ec, int sig) {
    if (ec) return;
    srv.log({{"time", format_time(now_ms())},
             {"event", "shutdown"},
             {"signal", sig == SIGTERM ? "SIGTERM" : "SIGINT"}});
    srv.stopping_ = true;
    boost::system::error_code ignored;
    if (tcp) tcp->close(ignored);
    if (unix_acc) unix_acc->close(ignored);
    // Requests in flight get shutdown_grace_s to finish; idle connections end at their next
    // timeout check. Boxes and their execs are not ours to stop: they keep running.
    std::thread([&srv] {
      std::unique_lock lk(srv.mu_);
      srv.cv_.wait_for(lk, std::chrono::seconds(srv.opts_.shutdown_grace_s),
                       [&] { return srv.workers_ == 0; });
      srv.ioc_.stop();
    }).detach();
  });
  // Idle policies (auto-pause, auto-stop) are applied by this long-running process.
  Engine::PolicyState policy_state;
  Background policy(opts.policy_interval_ms, [&] {
    try {
      for (const auto& what : api.engine().enforce_policies(policy_state))
        srv.log({{"time", format_time(now_ms())}, {"event", "policy"}, {"action", what}});
    } catch (const std::exception& e) {
      srv.log({{"time", format_time(now_ms())}, {"event", "policy"}, {"error", e.what()}});
    }
  });
  // Usage is metered every few minutes (and when a box or snapshot is removed).
  Background meter(opts.meter_interval_ms, [&] {
    try {
      api.engine().meter_usage();
    } catch (const std::exception& e) {
      srv.log({{"time", format_time(now_ms())}, {"event", "meter"}, {"error", e.what()}});
    }
  });
  // The host network daemon (DNS, egress proxy, exposed ports) is restarted if it died.
  Background network(2000, [&] {
    try {
      if (api.engine().ensure_network())
        srv.log({{"time", format_time(now_ms())},
                 {"event", "network"},
                 {"action", "started the network daemon"}});
    } catch (const std::exception& e) {
      srv.log({{"time", format_time(now_ms())}, {"event", "network"}, {"error", e.what()}});
    }
  });
  // The warm pool is refilled after every hand-out (and checked every few seconds).
  Background pool(api.engine().options().warm_pool.empty() ? 0 : 5000, [&] {
    try {
      for (const auto& what : api.engine().fill_pool())
        srv.log({{"time", format_time(now_ms())}, {"event", "warm_pool"}, {"action", what}});
    } catch (const std::exception& e) {
      srv.log({{"time", format_time(now_ms())}, {"event", "warm_pool"}, {"error", e.what()}});
    }
  });
  api.engine().on_pool_claim([&pool] { pool.poke(); });
  struct Unhook {
    Engine& e;
    ~Unhook() { e.on_pool_claim({}); }
  } unhook{api.engine()};
  pool.poke();
  if (on_ready) on_ready(port);
  srv.ioc_.run();
  if (!opts.socket.empty()) ::unlink(opts.socket.c_str());
  // Workers still running after the grace period hold references to the server; leave without
  // destroying what they use.
  std::unique_lock lk(srv.mu_);
  if (srv.workers_ > 0) {
    lk.unlock();
    std::fflush(nullptr);
    ::_exit(0);
  }
}

}  // namespace upstream::server
