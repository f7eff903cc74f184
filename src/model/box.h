// The vocabulary of boxes: what a box is made of, what an exec did, what a snapshot holds, and
// the one JSON encoding of each (model/box.cc), used by the store, the API, the CLI over HTTP and
// the configuration alike. Units are the same everywhere: CPUs as a number (0.5), bytes as bytes.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <initializer_list>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace upstream {

struct Limits {
  std::optional<uint64_t> cpu_milli;  // 1000 = one CPU
  std::optional<uint64_t> memory;     // bytes of RAM (no swap on top)
  std::optional<uint64_t> pids;       // processes and threads
  std::optional<uint64_t> disk;       // bytes of the box's writable layer and logs
};

// What happens to an idle box. Idle: no exec or file call, and no CPU use above a small
// threshold. Enforced by a long-running front (`upstream serve`).
struct Policy {
  int64_t auto_pause_ms = 30ll * 60 * 1000;          // pause after this long idle; 0: never
  int64_t auto_stop_ms = 24ll * 3600 * 1000;         // stop after this long paused; 0: never
  int64_t auto_archive_ms = 7ll * 24 * 3600 * 1000;  // archive after this long stopped; 0: never
  bool keep_alive = false;                           // never auto-paused
};

// The egress policy of network mode custom (see netd/egress.h), and the headers the host proxy
// adds to a box's HTTPS requests ("secrets injected in transit"; any mode with a network).
struct Egress {
  std::vector<std::string> allow_domains;  // exact names or *.suffix (any name below suffix)
  std::vector<std::string> allow_cidrs;    // IPv4 CIDRs reachable on any port
  std::vector<std::string> deny_cidrs;     // never reachable: wins over everything
  // host pattern (as allow_domains) -> header name -> value
  std::map<std::string, std::map<std::string, std::string>> headers;
  bool operator==(const Egress&) const = default;
};

// none: loopback only; allow-all: the internet (never private ranges, the host or other boxes);
// custom: only what an egress policy allows.
enum class NetworkMode { none, allow_all, custom };
std::string to_string(NetworkMode m);
// Throws invalid_argument naming the modes.
NetworkMode parse_network_mode(const std::string& text);
// As JSON it is its name (so that no conversion can write a number).
NLOHMANN_JSON_SERIALIZE_ENUM(NetworkMode, {{NetworkMode::none, "none"},
                                           {NetworkMode::allow_all, "allow-all"},
                                           {NetworkMode::custom, "custom"}})

// The label that makes a box or snapshot a tenant's (set by the API for its keys' tenants,
// reserved: no caller may set labels starting with "upstream.").
inline constexpr const char* kTenantLabel = "upstream.tenant";

struct BoxSpec {
  std::string image = "host";  // host | dir:PATH | tar:PATH
  std::string name;            // empty: generated
  std::map<std::string, std::string> labels;
  std::vector<std::string> env;  // KEY=VALUE, for every exec
  Limits limits;
  std::string user = "root";  // default user of execs: root, user, a name, uid[:gid]
  std::string workdir = "/home/user";
  NetworkMode network = NetworkMode::none;
  Egress egress;
  Policy policy;
};

namespace box_state {
inline constexpr const char* creating = "creating";
inline constexpr const char* starting = "starting";
inline constexpr const char* running = "running";
inline constexpr const char* paused = "paused";  // processes frozen, memory kept
inline constexpr const char* stopping = "stopping";
inline constexpr const char* stopped = "stopped";
inline constexpr const char* archived = "archived";  // stopped, its files packed into a layer
inline constexpr const char* removing = "removing";
// A box whose init lives: running or paused.
inline bool alive(const std::string& state) { return state == running || state == paused; }
}  // namespace box_state

struct BoxRecord {
  std::string id;
  std::string name;
  std::string state;
  std::string state_reason;
  BoxSpec spec;
  int64_t created_at = 0;
  int64_t started_at = 0;
  int64_t stopped_at = 0;
  pid_t init_pid = 0;
  uint64_t init_start = 0;
  std::optional<uint32_t> slot;
  std::string host_generation;
  pid_t owner_pid = 0;
  uint64_t owner_start = 0;
  uint64_t cpu_us_total = 0;  // accumulated over finished runs
  uint64_t memory_peak = 0;   // highest peak over finished runs
  uint64_t oom_kills_total = 0;
  int64_t last_active_at = 0;  // the last exec started (from its record) or file call (ms)
  int64_t state_since = 0;     // when it entered its state (ms)
  std::string archive_layer;   // archived: the layer holding its files
  std::string pool;            // waiting in the warm pool: the key of its shape; else empty
};

struct BoxEvent {
  int64_t at = 0;
  std::string state;
  std::string reason;
};

struct ExecRecord {
  std::string box_id;
  uint64_t seq = 0;
  std::vector<std::string> argv;
  std::string user;
  std::string cwd;
  bool background = false;
  bool tty = false;
  std::string state;  // running | exited | failed | lost
  pid_t pid = 0;
  int64_t started_at = 0;
  int64_t ended_at = 0;
  std::optional<int> exit_code;
  int signal = 0;
  std::string reason;
  bool timed_out = false;
  bool oom_killed = false;
  uint64_t cpu_us = 0;
  uint64_t max_rss_kb = 0;
  uint64_t stdout_bytes = 0;
  uint64_t stderr_bytes = 0;
  std::string stdout_tail;
  std::string stderr_tail;
};

// An immutable record of a box's files and configuration. Its layers (top first) sit on its
// base image; a box made from it mounts them below a writable layer of its own.
struct SnapshotRecord {
  std::string id;
  std::string name;
  std::string kind = "snapshot";    // snapshot | image (made by `upstream image build`)
  std::string source_box;           // id of the box it was taken of (empty when imported)
  std::string parent;               // id of the snapshot that box was made from, if any
  std::string base_image;           // host | dir:PATH | tar:PATH
  std::vector<std::string> layers;  // digests, top first
  BoxSpec config;                   // env, limits, user, workdir of the box it was taken of
  std::map<std::string, std::string> labels;
  uint64_t bytes = 0;        // its own (top) layer
  uint64_t total_bytes = 0;  // all its layers
  int64_t created_at = 0;
  bool ephemeral = false;  // made by a fork: removed with the last box made from it
  int64_t frozen_us = -1;  // in the reply to a capture: how long the box was frozen (0: it was not
                           // running); -1 otherwise
};

// Metered use over an interval, kept after its box or snapshot is gone: written by the meter
// pass of `upstream serve` and when a box or snapshot is removed.
struct UsageRow {
  std::string kind;     // box | snapshot
  std::string subject;  // its id
  std::string name;
  std::map<std::string, std::string> labels;  // incl. upstream.tenant
  int64_t start_at = 0, end_at = 0;           // ms
  uint64_t cpu_us = 0;                        // active CPU used in the interval
  int64_t running_ms = 0;                     // time running (not paused, not stopped)
  uint64_t cpus_milli = 0;                    // its CPU limit (0: none)
  uint64_t memory_peak = 0;                   // of the run, as last seen
  uint64_t bytes = 0;                         // disk (box: writable layer; snapshot: own layer)
  double byte_ms = 0;                         // storage over the interval (bytes x ms)
};

struct BoxUsage {
  uint64_t cpu_us = 0;       // active CPU time, all runs
  uint64_t memory = 0;       // now
  uint64_t memory_peak = 0;  // highest seen
  uint64_t pids = 0;
  uint64_t oom_kills = 0;
  std::optional<uint64_t> disk_bytes;
  int64_t running_ms = 0;       // time running since it was created (all runs)
  uint64_t snapshot_bytes = 0;  // own layers of the snapshots taken of it
  size_t snapshots = 0;
};

// The encodings. Decoders are strict (unknown fields and wrong types are refused, naming the
// field) and accept sizes as bytes or as text ("512m"); encoders write bytes.
//   Limits   {"cpus": 0.5, "memory": 536870912, "pids": 100, "disk": 1073741824}
//   Policy   {"auto_pause_ms": 1800000, "auto_stop_ms": ..., "auto_archive_ms": ..., "keep_alive"}
//   BoxSpec  {"image", "name", "labels", "env": {"K": "V"}, "limits", "user", "workdir",
//             "network": "none|allow-all|custom", "egress", "policy"}
// A spec's header values are secrets: shown only to the store (Secrets::kept); every front shows
// their names (Secrets::names).
enum class Secrets { kept, names };
nlohmann::json limits_to_json(const Limits& l);
Limits limits_from_json(const nlohmann::json& j, const std::string& field = "limits");
nlohmann::json policy_to_json(const Policy& p);
Policy policy_from_json(const nlohmann::json& j, const std::string& field = "policy");
nlohmann::json spec_to_json(const BoxSpec& s, Secrets secrets);
// `where` names the object in errors ("" for a whole body); `extra` are keys the caller reads
// itself (an API body's "count").
BoxSpec spec_from_json(const nlohmann::json& j, const std::string& where = "",
                       std::initializer_list<const char*> extra = {});
// The stored form of an earlier version (limits in "cpu_milli", env as a list) made current.
nlohmann::json upgrade_spec_v1(nlohmann::json j);

// Records as every front shows them: a box is its spec (header names only) and its state; a
// snapshot its layers and configuration.
nlohmann::json box_json(const BoxRecord& b, const BoxUsage* usage = nullptr,
                        const std::vector<BoxEvent>* events = nullptr);
BoxRecord box_from_json(const nlohmann::json& j, BoxUsage* usage = nullptr,
                        std::vector<BoxEvent>* events = nullptr);
nlohmann::json usage_json(const BoxUsage& u);
BoxUsage usage_from_json(const nlohmann::json& j);
nlohmann::json exec_json(const ExecRecord& e);
ExecRecord exec_from_json(const nlohmann::json& j);
nlohmann::json snapshot_json(const SnapshotRecord& s);
SnapshotRecord snapshot_from_json(const nlohmann::json& j);

}  // namespace upstream
