// What a request must look like before any handler sees it, whoever sends it and whether or not
// the server has keys: answers go only to the names the server is reached by (so a web page
// cannot rebind a name of its own to the server's address and read the answers), never to
// another site's page (Origin), and bodies are of the type their route takes (a page can send
// text/plain and form bodies cross-site without asking first; it cannot send JSON so).
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace upstream::server {

struct GuardOptions {
  // Names the server answers to besides IP addresses, "localhost" and "*.localhost": exact
  // names, or "*.example.com" for any name below example.com.
  std::vector<std::string> host_names;
  // Origins ("https://app.example.com") whose pages may call the API from a browser, besides
  // the server's own.
  std::vector<std::string> allowed_origins;
};

struct GuardedRequest {
  std::string method;
  std::string host;                   // the Host header
  std::optional<std::string> origin;  // the Origin header, if sent
  std::string content_type;
  bool has_body = false;
  bool raw_body = false;      // the route takes raw bytes (uploads, stdin), not JSON
  bool local_socket = false;  // over the unix socket: no browser can send it
};

struct GuardRefusal {
  int status;
  std::string code;
  std::string message;
};

// Whether `host` (a Host header value, with or without a port) names this server.
bool host_allowed(const std::string& host, const GuardOptions& o);

// nullopt if the request may go on; else why not.
std::optional<GuardRefusal> guard_request(const GuardedRequest& r, const GuardOptions& o);

}  // namespace upstream::server
