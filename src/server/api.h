// The HTTP API over the engine: routing, authentication, tenancy, JSON in and out. It knows
// nothing of sockets: the server hands it a parsed request and a Responder to answer through,
// so every handler runs on a worker thread and may block on the engine.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/engine.h"
#include "pipeline/document.h"
#include "server/keys.h"
#include "server/metrics.h"
#include "server/request_guard.h"

namespace upstream::server {

class Body;

struct Request {
  std::string method;
  std::string target;  // as sent: path and query
  std::string path;    // decoded path, without the query
  std::multimap<std::string, std::string> query;
  std::string authorization;
  std::string host;                   // the Host header
  std::optional<std::string> origin;  // the Origin header, if sent
  std::string accept;
  std::string content_type;
  std::string body;  // JSON bodies (bounded)
  int body_fd = -1;  // uploads, spooled to an unlinked file at offset 0
  std::string remote;
  int socket_fd = -1;  // readable when the client hangs up (used while streaming)
  // Filled in once a key is checked, for the access log: the key's public id and its tenant
  // (the tenant empty for an operator key; both empty when no key was checked).
  std::string key_id;
  std::string key_tenant;
};

class Responder {
 public:
  virtual ~Responder() = default;
  virtual void send(int status, const std::string& content_type, const std::string& body,
                    const std::vector<std::pair<std::string, std::string>>& headers = {}) = 0;
  // A streamed (chunked) response.
  virtual void begin(int status, const std::string& content_type) = 0;
  // False when the client has gone away; the handler should stop.
  virtual bool chunk(std::string_view data) = 0;
  virtual void end() = 0;
  virtual bool started() const = 0;
};

// An error meant for the client: status, a stable code and a message.
struct ApiError : std::runtime_error {
  ApiError(int status, std::string code, const std::string& message)
      : std::runtime_error(message), status(status), code(std::move(code)) {}
  int status;
  std::string code;
};

struct ApiOptions {
  GuardOptions guard;
  size_t max_body = 1 << 20;         // JSON bodies
  uint64_t max_upload = 1ull << 30;  // file and archive uploads
  size_t max_output = 16 << 20;      // stdout/stderr kept per stream in a waited exec's reply
  std::optional<uint64_t> default_max_boxes;
  std::optional<uint64_t> default_max_execs;
};

// Sends what `produce` (run on its own thread) writes into a pipe as a chunked response. An error
// before anything was sent is thrown as it is; after, the response is cut short (ApiError 0).
void stream_from_producer(Responder& res, const std::string& content_type,
                          const std::function<void(int fd)>& produce);

// A request to start an exec (POST /v1/boxes/{box}/execs), parsed and checked: what the engine
// is asked to run, and how the client wants its output.
struct ExecRequest {
  ExecSpec spec;
  std::optional<std::string> stdin_data;  // "stdin": the data, fed through a pipe
  bool stdin_stream = false;              // stdin sent by later requests
  bool stream = false;                    // output as events (NDJSON, or SSE when sse)
  bool sse = false;
};
// Throws ApiError (400) naming what is wrong.
ExecRequest parse_exec_request(const std::string& body, const std::string& accept);

class Api {
 public:
  Api(Engine& engine, store::Db& keys_db, ApiOptions opts);
  ~Api();

  // Answers one request. Never throws.
  void handle(Request& req, Responder& res);
  Engine& engine() { return engine_; }
  Metrics& metrics() { return metrics_; }
  std::atomic<uint64_t> inflight{0};  // requests being handled, kept by the server
  bool auth_required();
  // Whether a route takes raw bytes (uploads, an exec's stdin) rather than JSON.
  bool raw_body(const std::string& method, const std::string& path) const;
  // Bodies above this size are refused before they are read.
  uint64_t body_limit(const std::string& method, const std::string& path) const;

  // Turns an error into the JSON body and status sent to the client.
  static std::pair<int, std::string> error_body(const std::exception& e);

 private:
  struct Call {
    Request& req;
    Responder& res;
    std::string tenant;  // empty: no authentication, every box
    bool authed = false;
    void json_reply(int status, const nlohmann::json& j);
  };
  struct LiveExec;
  void dispatch(Call& c);
  void authenticate(Call& c);
  void handle_usage(Call& c);
  void handle_boxes(Call& c, const std::vector<std::string>& seg);
  void handle_box_collection(Call& c);
  void handle_box(Call& c, const BoxRecord& box, const std::vector<std::string>& seg);
  void handle_box_expose(Call& c, const BoxRecord& box, const std::vector<std::string>& seg);
  void handle_box_lifecycle(Call& c, const BoxRecord& box, const std::string& what);
  void handle_exec_create(Call& c, const BoxRecord& box);
  // Counts an exec against its tenant's concurrency limit (429 past it) until the guard goes.
  std::shared_ptr<void> hold_exec_slot(const std::string& tenant);
  void reply_exec_waited(Call& c, ExecSession& s, int stdin_fd, const std::string& early_err,
                         int64_t t0);
  void reply_exec_streamed(Call& c, ExecSession& s, bool sse, int stdin_fd,
                           const std::string& early_err, int64_t t0);
  void handle_execs(Call& c, const BoxRecord& box, const std::vector<std::string>& seg);
  void handle_files(Call& c, const BoxRecord& box, const std::vector<std::string>& seg);
  void handle_file(Call& c, const BoxRecord& box);
  BoxRecord tenant_box(Call& c, const std::string& ref);
  SnapshotRecord tenant_snapshot(Call& c, const std::string& ref);
  void handle_snapshots(Call& c, const std::vector<std::string>& seg);
  BoxSpec box_spec_from(Call& c, Body& b);
  // 429 if the tenant would exceed its box limit with `adding` more.
  void check_box_quota(Call& c, size_t adding);
  void handle_pipelines(Call& c, const std::vector<std::string>& seg);
  struct PipelineRun {  // POST /v1/pipelines, checked (the document parses, the session is the
                        // tenant's)
    std::string document, name;
    bool verbose = false, stream = false;
    std::optional<std::string> session, shown_session;  // as stored, and as the client named it
    std::optional<pipeline::RunNetwork> network;        // "network" and "egress", as for a box
  };
  PipelineRun pipeline_request(Call& c);
  // The `upstream run` command line that runs it.
  std::vector<std::string> pipeline_argv(const PipelineRun& q, const std::string& tenant) const;
  nlohmann::json pipeline_outcome(const PipelineRun& q, int code, const std::string& progress,
                                  const std::string& errors, const std::string& dir);
  void handle_sessions(Call& c, const std::vector<std::string>& seg);
  // A session's name in the context store: the tenant's sessions are "TENANT_NAME".
  std::string tenant_session(const Call& c, const std::string& name) const;
  // The same for a request naming a session by path: the installation's keys name a tenant's
  // session with ?tenant=TENANT.
  std::string stored_session(const Call& c, const std::string& shown) const;

  Engine& engine_;
  std::string self_exe_;  // this program, which runs pipelines as `upstream run`
  std::mutex keys_mu_;
  KeyStore keys_;
  ApiOptions opts_;
  Metrics metrics_;
  std::mutex execs_mu_;
  std::map<std::string, uint64_t> tenant_execs_;  // running execs per tenant
  std::map<std::pair<std::string, uint64_t>, std::shared_ptr<LiveExec>> live_;
};

}  // namespace upstream::server
