// The client side of the HTTP API: a request to an upstream server per connection, error replies
// turned into errors with the server's code and message, bodies read in pieces, whole or as the
// NDJSON event streams that exec and pipeline runs answer with.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>

namespace upstream::client {

// A reply being read. Its body is read one way: in pieces (read_some, read_all, copy_to) or as
// events (next_event; or fd, receive and buffered_event for a caller that polls).
class Reply {
 public:
  struct State;
  explicit Reply(std::unique_ptr<State> state);
  ~Reply();
  Reply(const Reply&) = delete;
  Reply& operator=(const Reply&) = delete;

  int status() const;
  // Up to `cap` bytes of the body; 0 at its end.
  size_t read_some(char* dst, size_t cap);
  std::string read_all();
  uint64_t copy_to(int fd);

  // The next NDJSON line of the body (blank lines skipped), reading as long as it takes;
  // nullopt at the end of the body.
  std::optional<nlohmann::json> next_event();
  // The connection's socket, to poll on.
  int fd() const;
  // A whole line already received, if there is one (never reads).
  std::optional<nlohmann::json> buffered_event();
  // One read of what the socket has (blocking only if it has nothing); false at the end.
  bool receive();

 private:
  void parse_buffered();
  std::unique_ptr<State> s_;
};

class Client {
 public:
  // url: http://HOST:PORT, without a path; key: an API key, or "" for none.
  Client(const std::string& url, std::string key);

  // Sends a request (its body from `body`, or streamed from body_fd when that is >= 0) and reads
  // the reply's header. An error status is thrown as an Error with the server's message.
  std::unique_ptr<Reply> open(const std::string& method, const std::string& target,
                              const std::string& body = "", const std::string& content_type = "",
                              int body_fd = -1);
  // A request with a JSON body (or none) whose reply is JSON (null when empty).
  nlohmann::json call(const std::string& method, const std::string& target,
                      const nlohmann::json* body = nullptr);
  nlohmann::json get(const std::string& target) { return call("GET", target); }
  nlohmann::json post(const std::string& target, const nlohmann::json& body) {
    return call("POST", target, &body);
  }
  nlohmann::json del(const std::string& target) { return call("DELETE", target); }

  const std::string& url() const { return url_; }

 private:
  std::string host_, port_, url_, key_;
};

// The server named by UPSTREAM_URL, with the key in UPSTREAM_API_KEY.
Client from_environment();

// "?k=v&..." of the pairs whose value is not empty, values percent-encoded ("" if none).
std::string query(std::initializer_list<std::pair<std::string, std::string>> params);

}  // namespace upstream::client
