// The CLI over HTTP: every box command as calls to an upstream server (UPSTREAM_URL).
#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <utility>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cstdlib>
#include <iostream>
#include <limits>

#include "cli/backend.h"
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

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;
using nlohmann::json;

// One path segment, or a query value.
std::string seg(const std::string& s) { return url_encode(s); }

// "?k=v&..." of the pairs whose value is not empty ("" if none).
std::string query(std::initializer_list<std::pair<std::string, std::string>> params) {
  std::string out;
  for (const auto& [k, v] : params)
    if (!v.empty()) out += (out.empty() ? "?" : "&") + k + "=" + seg(v);
  return out;
}

// One HTTP connection to the server.
struct Conn {
  net::io_context ioc;
  tcp::socket sock{ioc};
  beast::flat_buffer buf;
  std::optional<http::response_parser<http::buffer_body>> parser;
  int status = 0;
};

class Http {
 public:
  Http(const std::string& url, std::string key) : key_(std::move(key)) {
    if (!starts_with(url, "http://"))
      throw_invalid("UPSTREAM_URL '" + url + "' must be http://HOST:PORT");
    std::string rest = url.substr(7);
    while (!rest.empty() && rest.back() == '/') rest.pop_back();
    if (rest.find('/') != std::string::npos)
      throw_invalid("UPSTREAM_URL '" + url + "' must be http://HOST:PORT, without a path");
    auto colon = rest.rfind(':');
    host_ = colon == std::string::npos ? rest : rest.substr(0, colon);
    port_ = colon == std::string::npos ? "80" : rest.substr(colon + 1);
    if (port_.empty() || port_.size() > 5 ||
        port_.find_first_not_of("0123456789") != std::string::npos)
      throw_invalid("UPSTREAM_URL '" + url + "': '" + port_ + "' is not a port number");
    if (host_.size() > 2 && host_.front() == '[') host_ = host_.substr(1, host_.size() - 2);
    if (host_.empty()) throw_invalid("UPSTREAM_URL '" + url + "' has no host");
    url_ = url;
  }

  // Sends a request and reads the response header; the body is read from the returned
  // connection. Error statuses are thrown as errors with the server's message.
  std::unique_ptr<Conn> open(http::verb verb, const std::string& target, const std::string& body,
                             const std::string& content_type, int body_fd = -1) {
    auto c = std::make_unique<Conn>();
    beast::error_code ec;
    // Addresses are used as they are; names go through the resolver (which, in this static
    // binary, needs the host's own glibc NSS modules: fine on the machine it was built for).
    auto addr = net::ip::make_address(host_ == "localhost" ? "127.0.0.1" : host_, ec);
    if (!ec) {
      c->sock.connect(tcp::endpoint(addr, static_cast<uint16_t>(std::stoul(port_))), ec);
    } else {
      ec.clear();
      tcp::resolver res(c->ioc);
      auto eps = res.resolve(host_, port_, ec);
      if (!ec) net::connect(c->sock, eps, ec);
    }
    if (ec)
      throw Error(Errc::unavailable,
                  "cannot reach the upstream server at " + url_ + ": " + ec.message());
    c->sock.set_option(tcp::no_delay(true), ec);
    ::fcntl(c->sock.native_handle(), F_SETFD, FD_CLOEXEC);
    auto prepare = [&](auto& req) {
      req.set(http::field::host, host_);
      req.set(http::field::user_agent, "upstream-cli/" UPSTREAM_VERSION);
      if (!key_.empty()) req.set(http::field::authorization, "Bearer " + key_);
      if (!content_type.empty()) req.set(http::field::content_type, content_type);
      req.keep_alive(false);
    };
    if (body_fd >= 0) {
      http::request<http::file_body> req{verb, target, 11};
      prepare(req);
      beast::file f;
      f.native_handle(::fcntl(body_fd, F_DUPFD_CLOEXEC, 3));
      req.body().reset(std::move(f), ec);
      req.prepare_payload();
      http::write(c->sock, req, ec);
    } else {
      http::request<http::string_body> req{verb, target, 11};
      prepare(req);
      req.body() = body;
      req.prepare_payload();
      http::write(c->sock, req, ec);
    }
    // A server that answers before reading the whole body (413) may reset the connection while
    // we write: read its answer anyway.
    beast::error_code wec = ec;
    c->parser.emplace();
    c->parser->body_limit(std::numeric_limits<std::uint64_t>::max());
    http::read_header(c->sock, c->buf, *c->parser, ec);
    if (ec)
      throw Error(Errc::unavailable, "the upstream server at " + url_ + " did not answer: " +
                                         (wec ? wec.message() : ec.message()));
    c->status = c->parser->get().result_int();
    if (c->status >= 400) {
      std::string text = read_all(*c);
      std::string code = "internal",
                  message = text.empty() ? "HTTP " + std::to_string(c->status) : text;
      try {
        json j = json::parse(text);
        code = j.value("code", code);
        message = j.value("message", message);
      } catch (const json::exception&) {
      }
      Errc kind = code == "unauthenticated" ? Errc::failed_precondition : errc_from_name(code);
      if (c->status == 404) kind = Errc::not_found;
      if (c->status == 400 || c->status == 413) kind = Errc::invalid_argument;
      throw Error(kind, message);
    }
    return c;
  }

  // Reads up to `cap` bytes of body; 0 at the end.
  static size_t read_some(Conn& c, char* dst, size_t cap) {
    auto& p = *c.parser;
    while (!p.is_done()) {
      p.get().body().data = dst;
      p.get().body().size = cap;
      beast::error_code ec;
      http::read_some(c.sock, c.buf, p, ec);
      if (ec && ec != http::error::need_buffer)
        throw Error(Errc::unavailable, "the upstream server went away: " + ec.message());
      size_t got = cap - p.get().body().size;
      if (got) return got;
    }
    return 0;
  }

  static std::string read_all(Conn& c) {
    std::string out;
    char buf[65536];
    for (size_t n; (n = read_some(c, buf, sizeof buf)) > 0;) out.append(buf, n);
    return out;
  }

  static uint64_t copy_to(Conn& c, int fd) {
    char buf[65536];
    uint64_t total = 0;
    for (size_t n; (n = read_some(c, buf, sizeof buf)) > 0; total += n) write_all(fd, buf, n);
    return total;
  }

  json call(http::verb verb, const std::string& target, const json* body = nullptr) {
    auto c = open(verb, target, body ? body->dump() : "", body ? "application/json" : "");
    std::string text = read_all(*c);
    try {
      return text.empty() ? json() : json::parse(text);
    } catch (const json::exception& e) {
      throw Error(Errc::internal, std::string("unexpected reply from the server: ") + e.what());
    }
  }
  json get(const std::string& t) { return call(http::verb::get, t); }
  json post(const std::string& t, const json& b) { return call(http::verb::post, t, &b); }

  const std::string& url() const { return url_; }

 private:
  std::string host_, port_, url_, key_;
};

UniqueFd temp_file() {
  UniqueFd fd(::open("/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600));
  if (!fd) throw_sys("create a temporary file in /tmp");
  return fd;
}

class RemoteExec : public ExecSession {
 public:
  RemoteExec(Http& http, std::string box, std::unique_ptr<Conn> conn, bool stdin_stream)
      : http_(http), box_(std::move(box)), conn_(std::move(conn)), stdin_stream_(stdin_stream) {
    // The first event says which exec this is.
    for (;;) {
      auto ev = next_event();
      if (!ev) throw Error(Errc::unavailable, "the server ended the exec's stream early");
      if (ev->value("type", "") == "start") {
        seq_ = ev->value("exec", uint64_t{0});
        pid_ = ev->value("pid", 0);
        box_id_ = ev->value("box_id", box_);
        break;
      }
    }
  }
  RemoteExec(Http& http, const json& rec) : http_(http) {
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
    int sock = conn_->sock.native_handle();
    for (;;) {
      // Whole events already received come first.
      parse_buffered();
      while (auto ev = pop_event()) {
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
          if (!receive())
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
      auto c = http_.open(http::verb::post,
                          "/v1/boxes/" + seg(box_id_) + "/execs/" + std::to_string(seq_) +
                              "/stdin" + (eof ? "?eof=true" : ""),
                          data, "application/octet-stream");
      Http::read_all(*c);
    } catch (const Error&) {
      stdin_closed_ = true;  // the command stopped reading (or ended): like a closed pipe
    }
    if (eof) stdin_closed_ = true;
  }

  // A whole NDJSON line received so far, if any.
  std::optional<json> pop_event() {
    for (;;) {
      auto nl = lines_.find('\n');
      if (nl == std::string::npos) return std::nullopt;
      std::string line = lines_.substr(0, nl);
      lines_.erase(0, nl + 1);
      if (trim(line).empty()) continue;
      try {
        return json::parse(line);
      } catch (const json::exception& e) {
        throw Error(Errc::internal, std::string("unexpected event from the server: ") + e.what());
      }
    }
  }

  // Reads what the socket has (one read, which blocks only if it has nothing) and parses it into
  // lines_. False at the end of the stream.
  bool receive() {
    auto& p = *conn_->parser;
    if (p.is_done()) return false;
    beast::error_code ec;
    size_t n = conn_->sock.read_some(conn_->buf.prepare(65536), ec);
    if (ec == net::error::eof || n == 0) return false;
    if (ec) throw Error(Errc::unavailable, "the upstream server went away: " + ec.message());
    conn_->buf.commit(n);
    parse_buffered();
    return true;
  }

  // Parses what was received but not parsed yet (also what arrived with the header).
  void parse_buffered() {
    auto& p = *conn_->parser;
    beast::error_code ec;
    char body[65536];
    while (conn_->buf.size() > 0 && !p.is_done()) {
      p.get().body().data = body;
      p.get().body().size = sizeof body;
      size_t used = p.put(conn_->buf.data(), ec);
      conn_->buf.consume(used);
      lines_.append(body, sizeof body - p.get().body().size);
      if (ec == http::error::need_more) break;
      if (ec && ec != http::error::need_buffer)
        throw Error(Errc::unavailable, "malformed reply from the upstream server: " + ec.message());
      if (used == 0 && p.get().body().size == sizeof body) break;
    }
  }

  // The next event, reading as long as it takes.
  std::optional<json> next_event() {
    parse_buffered();
    for (;;) {
      if (auto ev = pop_event()) return ev;
      if (!receive()) return std::nullopt;
    }
  }

  Http& http_;
  std::string box_, box_id_;
  std::unique_ptr<Conn> conn_;
  bool stdin_stream_ = false, stdin_closed_ = false, background_ = false;
  uint64_t seq_ = 0;
  pid_t pid_ = 0;
  ExecRecord bg_;
  std::string lines_;
};

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
    http_.call(http::verb::delete_, box(ref) + "/expose/" + seg(which));
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
  void remove_snapshot(const std::string& ref) override {
    http_.call(http::verb::delete_, "/v1/snapshots/" + seg(ref));
  }
  void export_snapshot(const std::string& ref, int out_fd) override {
    auto c = http_.open(http::verb::get, "/v1/snapshots/" + seg(ref) + "/export", "", "");
    Http::copy_to(*c, out_fd);
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
    auto c = http_.open(http::verb::put,
                        "/v1/snapshots/import" + query({{"name", name}, {"base", base}}), "",
                        "application/zstd", fd);
    std::string text = Http::read_all(*c);
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
    http_.call(http::verb::delete_, box(ref) + (force ? "?force=true" : ""));
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
    auto conn = http_.open(http::verb::post, box(ref) + "/execs", body.dump(), "application/json");
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
    auto c = http_.open(http::verb::get,
                        box(ref) + "/execs/" + std::to_string(seq) +
                            "/logs?stream=" + (which == Stream::stdout_ ? "stdout" : "stderr") +
                            "&offset=" + std::to_string(offset),
                        "", "");
    return Http::copy_to(*c, out_fd);
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
    auto c = http_.open(http::verb::get,
                        box(ref) + "/files/archive?path=" + seg(box_path) + uq(user), "", "");
    Http::copy_to(*c, out_fd);
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
    s.kernel = j.value("kernel", "");
    auto boxes = list_boxes({});
    s.boxes = boxes.size();
    for (const auto& b : boxes) {
      s.running += b.state == box_state::running;
      s.paused += b.state == box_state::paused;
    }
    return s;
  }

 private:
  std::string box(const std::string& ref) { return "/v1/boxes/" + seg(ref); }
  static std::string uq(const std::string& user) {
    return user.empty() ? "" : "&user=" + seg(user);
  }
  void put_tar(const std::string& ref, const std::string& dir, int fd, const std::string& user) {
    auto c = http_.open(http::verb::put, box(ref) + "/files/archive?path=" + seg(dir) + uq(user),
                        "", "application/x-tar", fd);
    Http::read_all(*c);
  }

  Http http_;
};

}  // namespace

int run_remote(const std::string& url, const std::string& key, const std::string& path,
               const std::optional<std::string>& session, const std::optional<std::string>& output,
               bool verbose) {
  // Checked here as it would be locally: a bad document exits 2 with the file untouched.
  pipeline::Document doc = pipeline::load_document(path);
  if (doc.steps.empty())
    throw Error(Errc::invalid_argument,
                path +
                    ": has no steps (fenced code blocks marked bash, sh, python, python3, "
                    "node or js)");
  std::string source;
  {
    UniqueFd fd = open_or_throw(path, O_RDONLY | O_CLOEXEC);
    source = read_all(fd.get());
  }
  std::string base = path.substr(path.find_last_of('/') + 1), name;
  for (char ch : base)
    name += std::isalnum(static_cast<unsigned char>(ch)) || ch == '.' || ch == '-' ? ch : '_';
  if (name.empty() || name[0] == '.') name = "document.md";
  json body = {{"document", source}, {"name", name}, {"stream", true}, {"verbose", verbose}};
  if (session) body["session"] = *session;
  Http http(url, key);
  auto c = http.open(http::verb::post, "/v1/pipelines", body.dump(), "application/json");
  std::string lines;
  char buf[65536];
  std::optional<json> end;
  bool hold = false;
  std::vector<std::string> held;
  while (!end) {
    size_t n = Http::read_some(*c, buf, sizeof buf);
    if (n == 0) break;
    lines.append(buf, n);
    size_t nl;
    while ((nl = lines.find('\n')) != std::string::npos) {
      json ev;
      try {
        ev = json::parse(lines.substr(0, nl));
      } catch (const json::exception& e) {
        throw Error(Errc::internal, std::string("unexpected event from the server: ") + e.what());
      }
      lines.erase(0, nl + 1);
      std::string type = ev.value("type", "");
      std::string line = ev.value("line", "");
      if (type == "progress") {
        // Where the report went on the server is not where it goes here: that line is said
        // below, in its place, once the report is written here.
        if (starts_with(line, "Report written to ") ||
            line.find(" changed while the run went on") != std::string::npos) {
          hold = true;
          continue;
        }
        if (hold)
          held.push_back(line);
        else
          std::cout << line << std::endl;
      } else if (type == "error") {
        std::cerr << line << std::endl;
      } else if (type == "end") {
        end = ev;
      }
    }
  }
  if (!end) throw Error(Errc::unavailable, "the server ended the run's stream early");
  int code = end->value("exit_code", pipeline::kRunEngineError);
  std::string report = end->value("report", "");
  if (!report.empty()) {
    // Written like a local run: atomically, and beside the document if it changed meanwhile.
    std::string target = output ? *output : path;
    bool diverted = false;
    if (!output) {
      UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
      if (!fd || read_all(fd.get()) != source) {
        std::string stem = path.ends_with(".md") ? path.substr(0, path.size() - 3) : path;
        target = stem + "." + end->value("run_id", std::string("run")) + ".md";
        diverted = true;
      }
    }
    std::string tmp = target + ".tmp-" + random_hex(6);
    {
      UniqueFd fd = open_or_throw(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
      write_all(fd.get(), report);
      if (::fsync(fd.get()) != 0) throw_sys("fsync " + tmp);
    }
    struct stat st;
    if (::stat(target.c_str(), &st) == 0) ::chmod(tmp.c_str(), st.st_mode & 07777);
    if (::rename(tmp.c_str(), target.c_str()) != 0) {
      int err = errno;
      ::unlink(tmp.c_str());
      throw_sys("write the report to " + target, err);
    }
    if (diverted)
      std::cout << path << " changed while the run went on; it was left alone and the report is in "
                << target << std::endl;
    else
      std::cout << "Report written to " << target << std::endl;
  }
  for (const auto& line : held) std::cout << line << std::endl;
  return code;
}

namespace {
Http env_http() {
  const char* url = std::getenv("UPSTREAM_URL");
  const char* key = std::getenv("UPSTREAM_API_KEY");
  return Http(url ? url : "", key ? key : "");
}
}  // namespace

json remote_json(const std::string& method, const std::string& target) {
  Http h = env_http();
  return h.call(http::string_to_verb(method), target);
}

void remote_download(const std::string& target, int fd) {
  Http h = env_http();
  auto c = h.open(http::verb::get, target, "", "");
  Http::copy_to(*c, fd);
}

std::string url_segment(const std::string& text) { return seg(text); }

std::unique_ptr<Backend> make_remote_backend(const std::string& url, const std::string& key) {
  return std::make_unique<RemoteBackend>(url, key);
}

}  // namespace upstream::cli
