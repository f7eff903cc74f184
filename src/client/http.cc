#include "client/http.h"

#include <fcntl.h>
#include <unistd.h>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cstdlib>
#include <limits>

#include "common/error.h"
#include "common/fd.h"
#include "common/strings.h"
#include "common/url.h"

namespace upstream::client {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;
using nlohmann::json;

struct Reply::State {
  net::io_context ioc;
  tcp::socket sock{ioc};
  beast::flat_buffer buf;
  std::optional<http::response_parser<http::buffer_body>> parser;
  int status = 0;
  std::string lines;  // body received as events, not yet taken
};

Reply::Reply(std::unique_ptr<State> state) : s_(std::move(state)) {}
Reply::~Reply() = default;

int Reply::status() const { return s_->status; }
int Reply::fd() const { return s_->sock.native_handle(); }

size_t Reply::read_some(char* dst, size_t cap) {
  auto& p = *s_->parser;
  while (!p.is_done()) {
    p.get().body().data = dst;
    p.get().body().size = cap;
    beast::error_code ec;
    http::read_some(s_->sock, s_->buf, p, ec);
    if (ec && ec != http::error::need_buffer)
      throw Error(Errc::unavailable, "the upstream server went away: " + ec.message());
    size_t got = cap - p.get().body().size;
    if (got) return got;
  }
  return 0;
}

std::string Reply::read_all() {
  std::string out;
  char buf[65536];
  for (size_t n; (n = read_some(buf, sizeof buf)) > 0;) out.append(buf, n);
  return out;
}

uint64_t Reply::copy_to(int fd) {
  char buf[65536];
  uint64_t total = 0;
  for (size_t n; (n = read_some(buf, sizeof buf)) > 0; total += n) write_all(fd, buf, n);
  return total;
}

// Parses what was received but not parsed yet (also what arrived with the header) into lines.
void Reply::parse_buffered() {
  auto& p = *s_->parser;
  beast::error_code ec;
  char body[65536];
  while (s_->buf.size() > 0 && !p.is_done()) {
    p.get().body().data = body;
    p.get().body().size = sizeof body;
    size_t used = p.put(s_->buf.data(), ec);
    s_->buf.consume(used);
    s_->lines.append(body, sizeof body - p.get().body().size);
    if (ec == http::error::need_more) break;
    if (ec && ec != http::error::need_buffer)
      throw Error(Errc::unavailable, "malformed reply from the upstream server: " + ec.message());
    if (used == 0 && p.get().body().size == sizeof body) break;
  }
}

std::optional<json> Reply::buffered_event() {
  parse_buffered();
  for (;;) {
    auto nl = s_->lines.find('\n');
    if (nl == std::string::npos) return std::nullopt;
    std::string line = s_->lines.substr(0, nl);
    s_->lines.erase(0, nl + 1);
    if (trim(line).empty()) continue;
    try {
      return json::parse(line);
    } catch (const json::exception& e) {
      throw Error(Errc::internal, std::string("unexpected event from the server: ") + e.what());
    }
  }
}

bool Reply::receive() {
  auto& p = *s_->parser;
  if (p.is_done()) return false;
  beast::error_code ec;
  size_t n = s_->sock.read_some(s_->buf.prepare(65536), ec);
  if (ec == net::error::eof || n == 0) return false;
  if (ec) throw Error(Errc::unavailable, "the upstream server went away: " + ec.message());
  s_->buf.commit(n);
  parse_buffered();
  return true;
}

std::optional<json> Reply::next_event() {
  for (;;) {
    if (auto ev = buffered_event()) return ev;
    if (!receive()) return std::nullopt;
  }
}

Client::Client(const std::string& url, std::string key) : key_(std::move(key)) {
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

namespace {

// An error reply as the error it names.
[[noreturn]] void throw_reply(int status, const std::string& text) {
  std::string code = "internal", message = text.empty() ? "HTTP " + std::to_string(status) : text;
  try {
    json j = json::parse(text);
    code = j.value("code", code);
    message = j.value("message", message);
  } catch (const json::exception&) {
  }
  Errc kind = code == "unauthenticated" ? Errc::failed_precondition : errc_from_name(code);
  if (status == 404) kind = Errc::not_found;
  if (status == 400 || status == 413) kind = Errc::invalid_argument;
  throw Error(kind, message);
}

}  // namespace

std::unique_ptr<Reply> Client::open(const std::string& method, const std::string& target,
                                    const std::string& body, const std::string& content_type,
                                    int body_fd) {
  http::verb verb = http::string_to_verb(method);
  if (verb == http::verb::unknown) throw_invalid("unknown HTTP method '" + method + "'");
  auto s = std::make_unique<Reply::State>();
  beast::error_code ec;
  // Addresses are used as they are; names go through the resolver (which, in this static
  // binary, needs the host's own glibc NSS modules: fine on the machine it was built for).
  auto addr = net::ip::make_address(host_ == "localhost" ? "127.0.0.1" : host_, ec);
  if (!ec) {
    s->sock.connect(tcp::endpoint(addr, static_cast<uint16_t>(std::stoul(port_))), ec);
  } else {
    ec.clear();
    tcp::resolver res(s->ioc);
    auto eps = res.resolve(host_, port_, ec);
    if (!ec) net::connect(s->sock, eps, ec);
  }
  if (ec)
    throw Error(Errc::unavailable,
                "cannot reach the upstream server at " + url_ + ": " + ec.message());
  s->sock.set_option(tcp::no_delay(true), ec);
  ::fcntl(s->sock.native_handle(), F_SETFD, FD_CLOEXEC);
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
    http::write(s->sock, req, ec);
  } else {
    http::request<http::string_body> req{verb, target, 11};
    prepare(req);
    req.body() = body;
    req.prepare_payload();
    http::write(s->sock, req, ec);
  }
  // A server that answers before reading the whole body (413) may reset the connection while
  // we write: read its answer anyway.
  beast::error_code wec = ec;
  s->parser.emplace();
  s->parser->body_limit(std::numeric_limits<std::uint64_t>::max());
  http::read_header(s->sock, s->buf, *s->parser, ec);
  if (ec)
    throw Error(Errc::unavailable, "the upstream server at " + url_ +
                                       " did not answer: " + (wec ? wec.message() : ec.message()));
  s->status = s->parser->get().result_int();
  auto reply = std::make_unique<Reply>(std::move(s));
  if (reply->status() >= 400) throw_reply(reply->status(), reply->read_all());
  return reply;
}

json Client::call(const std::string& method, const std::string& target, const json* body) {
  auto r = open(method, target, body ? body->dump() : "", body ? "application/json" : "");
  std::string text = r->read_all();
  try {
    return text.empty() ? json() : json::parse(text);
  } catch (const json::exception& e) {
    throw Error(Errc::internal, std::string("unexpected reply from the server: ") + e.what());
  }
}

Client from_environment() {
  const char* url = std::getenv("UPSTREAM_URL");
  const char* key = std::getenv("UPSTREAM_API_KEY");
  return Client(url ? url : "", key ? key : "");
}

std::string query(std::initializer_list<std::pair<std::string, std::string>> params) {
  std::string out;
  for (const auto& [k, v] : params)
    if (!v.empty()) out += (out.empty() ? "?" : "&") + k + "=" + url_encode(v);
  return out;
}

}  // namespace upstream::client
