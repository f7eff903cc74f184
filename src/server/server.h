// `upstream serve`: HTTP/1.1 with keep-alive over TCP and/or a unix socket, on Boost.Beast.
//
// One I/O thread accepts connections and reads requests asynchronously under deadlines, so a
// slow or idle client holds a socket but never a thread. A complete request is handed to a
// worker thread, which runs the handler (it may block on the engine, or stream an exec for
// minutes) and writes the response; the connection then goes back to the I/O thread.
#pragma once

#include <cstdint>
#include <string>

#include "server/api.h"

namespace upstream::server {

struct ServeOptions {
  std::string listen = "127.0.0.1:8420";  // empty: no TCP listener
  std::string socket;                     // unix socket path; empty: none
  int idle_timeout_s = 60;                // keep-alive: time to the first byte of a request
  int header_timeout_s = 10;              // from the first byte to the end of the headers
  int body_timeout_s = 600;               // to read the body
  int write_timeout_s = 60;               // without progress while writing a response
  size_t max_connections = 4096;
  size_t max_inflight = 1024;          // requests handled at once
  int shutdown_grace_s = 10;           // on SIGTERM, for requests in flight to finish
  bool access_log = true;              // JSON lines on stderr
  std::string spool_dir;               // where uploads are spooled (unlinked files)
  int64_t policy_interval_ms = 5000;   // how often idle policies are applied; 0: never
  int64_t meter_interval_ms = 300000;  // how often usage is metered; 0: never
};

// "127.0.0.1:8420", "[::1]:8420", ":8420" (all addresses). Throws invalid_argument.
std::pair<std::string, uint16_t> parse_listen(const std::string& text);
bool is_loopback(const std::string& host);

// Serves until SIGTERM or SIGINT. `on_ready` is called once listening (with the bound port).
void serve(Api& api, const ServeOptions& opts,
           const std::function<void(uint16_t port)>& on_ready = {});

}  // namespace upstream::server
