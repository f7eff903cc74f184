// The engine: boxes, execs and files, on one state directory. Every front (the CLI, and later
// the HTTP server and the pipeline runner) is a thin translation onto this class.
//
// Several processes may open the same state directory at once (CLI invocations next to a
// server): the database serialises writers, a per-box lock serialises lifecycle changes, and a
// running box belongs to no process but its own init.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "model/box.h"
#include "store/box_store.h"

namespace upstream {

namespace storage {
class Pool;
struct Layout;
}  // namespace storage
namespace runtime {
class CgroupSystem;
class SlotAllocator;
}  // namespace runtime

// A shape of the warm pool: `size` boxes of this image and these limits are kept created and
// running, to be handed out by creates that ask for exactly that.
struct PoolShape {
  std::string image = "host";
  Limits limits;  // unset: the defaults
  size_t size = 0;
};

// Prices that turn metered usage into a cost estimate (absent: no estimate).
struct Prices {
  std::string currency = "USD";
  std::optional<double> cpu_core_hour;     // per hour of one CPU actually used
  std::optional<double> storage_gb_month;  // per GiB of files kept for a month (30 days)
  std::optional<double> wall_core_hour;    // per hour a box exists with one CPU, for comparison
  bool any() const { return cpu_core_hour || storage_gb_month || wall_core_hour; }
};

// What a tenant (a box or snapshot with the kTenantLabel label; the API's keys act for tenants)
// may name and take. Unset ceilings come from the host (see TenantPolicy::rules in tenants.cc).
struct TenantRules {
  // Images a tenant may name besides its own snapshots and images: "host", "dir:PATH",
  // "tar:PATH" (operator features otherwise) or the names of the operator's snapshots.
  std::optional<std::vector<std::string>> images;
  Limits box_max;                        // ceilings of one box's limits
  std::optional<uint64_t> total_memory;  // memory limits of its live boxes, together
  std::optional<uint64_t> total_disk;    // disk limits of all its boxes, together
  std::optional<uint64_t> pool_reserve;  // pool space its creates never eat into
};

struct EngineOptions {
  std::string home;              // state directory
  std::string init_path;         // box init binary; empty: the one embedded in this program
  std::string storage = "auto";  // auto | btrfs | dir
  std::optional<uint64_t> pool_size;
  std::string slots_dir = "/run/upstream/slots";
  Limits default_limits;
  size_t exec_tail_bytes = 64 * 1024;  // output kept in the database per stream
  size_t exec_history = 10000;         // exec records kept per box
  uint64_t log_limit = 1ull << 30;     // space for exec logs per box, apart from its disk limit
  int64_t host_image_max_age_ms = 24ll * 3600 * 1000;
  // From the configuration file ($UPSTREAM_CONFIG, else $UPSTREAM_HOME/config.json).
  std::string config_path;
  std::vector<PoolShape> warm_pool;
  Prices prices;
  // Private ranges the operator opened to boxes with a network (the host firewall is shared by
  // every state directory on the host: the last one to start a networked box sets these).
  std::vector<std::string> open_private;
  // Resolvers netd asks for boxes' names (network.resolvers; empty: the host's resolv.conf), and
  // CAs it trusts, besides the system's, when it intercepts HTTPS to add headers
  // (network.trust_ca).
  std::vector<std::string> resolvers;
  std::string trust_ca;
  std::string netd_exe;  // the upstream binary that runs netd; empty: this program
  std::string expose_address = "127.0.0.1";  // where exposed ports listen
  // Whether boxes see their own limits in /proc (runtime/proc_view.h; "proc_view" in the
  // configuration): false leaves them the kernel's files, and lxcfs is not started for them.
  bool proc_view = true;
  // The configuration's "tenants": rules for every tenant, and per-tenant overrides of them.
  TenantRules tenants;
  std::map<std::string, TenantRules> tenant_overrides;
  // Told of waits a user would otherwise sit through in silence (the host image being prepared:
  // a few seconds on a new installation); the CLI says them on a terminal.
  std::function<void(const std::string&)> notice;

  // UPSTREAM_HOME, UPSTREAM_STORAGE, UPSTREAM_POOL_SIZE, UPSTREAM_INIT, UPSTREAM_SLOTS_DIR,
  // UPSTREAM_CONFIG, and the configuration file.
  static EngineOptions from_environment();
  // Reads the configuration file (JSON: "warm_pool", "prices"); throws invalid_argument naming
  // the file and the field. A missing file is an empty configuration.
  void load_config(const std::string& path);
};

// A "tenants" block of the configuration file ({"images", "box", "total", "pool_reserve"}, and
// at the top level "per_tenant"); `at` names it in errors.
TenantRules tenant_rules_from_json(const nlohmann::json& j, const std::string& at, bool top);

struct ExecSpec {
  std::vector<std::string> argv;  // either a command...
  std::string shell;              // ...or a shell string, run with bash -c (sh -c without bash)
  std::vector<std::string> env;   // KEY=VALUE, on top of the box's env
  std::string cwd;                // empty: the box's workdir
  std::string user;               // empty: the box's user
  uint64_t timeout_ms = 0;        // 0: none
  bool stdin = false;             // stream stdin (else /dev/null)
  bool tty = false;
  uint16_t rows = 24, cols = 80;
  bool background = false;  // detach: output to log files, return at once
};

enum class Stream { stdout_, stderr_ };

class ExecSession;
class FileSession;

struct SnapshotOptions {
  std::string name;  // empty: generated
  std::string kind = "snapshot";
  std::map<std::string, std::string> labels;
  bool ephemeral = false;
};

struct SystemInfo {
  std::string version;
  std::string home;
  std::string storage;
  std::string cgroups;
  std::string
      proc_view;  // how boxes see their own limits in /proc (runtime/proc_view.h), or why not
  std::string kernel;
  std::string instance;
  std::string host_image;
  size_t boxes = 0;
  size_t running = 0;
  size_t paused = 0;
  size_t pooled = 0;  // ready in the warm pool
};

class Engine {
 public:
  // Opens (creating if needed) the state directory and reconciles what an earlier crash left.
  static std::unique_ptr<Engine> open(const EngineOptions& opts);
  ~Engine();

  BoxRecord create_box(BoxSpec spec);
  // Whether a create with this image and these labels (their tenant) would find the image,
  // checked without preparing or importing anything: throws what create_box would (an unknown
  // image, a snapshot that does not exist, an image the tenant may not name).
  void check_image(const std::string& image, const std::map<std::string, std::string>& labels);
  BoxRecord get_box(const std::string& ref);
  std::vector<BoxRecord> list_boxes(const store::BoxFilter& filter = {});
  BoxRecord start_box(const std::string& ref);
  BoxRecord stop_box(const std::string& ref, int64_t grace_ms = 10000,
                     const std::string& reason = "stopped");
  void remove_box(const std::string& ref, bool force);
  // Freezes every process of a running box (memory kept, no CPU used) / thaws them. Execs and
  // file calls sent to a paused box resume it first.
  BoxRecord pause_box(const std::string& ref, const std::string& reason = "paused");
  BoxRecord resume_box(const std::string& ref);
  // Packs a stopped box's files into the layer store and frees its working directory; `start`
  // (or a file call) unpacks them.
  BoxRecord archive_box(const std::string& ref, const std::string& reason = "archived");

  // One pass of the idle policies (see Policy): pauses running boxes idle for their auto_pause
  // time, stops boxes paused for their auto_stop time. `cpu` carries CPU samples between passes
  // (box id -> {cpu_us, at_ms}); a box that used more than `cpu_threshold` of one CPU since the
  // last pass counts as active. Returns what it did, for logging.
  struct PolicyState {
    std::map<std::string, std::pair<uint64_t, int64_t>> cpu;
  };
  std::vector<std::string> enforce_policies(PolicyState& state, double cpu_threshold = 0.02);
  BoxUsage usage(const std::string& ref);
  // Changes a box's network mode; a running (or paused) box gets or loses its network at once,
  // without a restart.
  // `egress` replaces the box's policy; with keep_headers its headers stay what they were
  // (unless the mode is none). A running box's new policy holds for its next connection.
  BoxRecord set_network(const std::string& ref, NetworkMode mode, Egress egress = {},
                        bool keep_headers = false);
  // A box's network counters (see netd): bytes, connections and requests per destination,
  // denied attempts with their reasons, DNS queries.
  nlohmann::json net_stats(const std::string& ref);
  // Restarts the host network daemon if boxes with a network need it and it died (a long-running
  // front calls this every few seconds). True if it had to.
  bool ensure_network();
  // Builds the host firewall's table again, with every live box's rules, in one transaction
  // (after an operator flushed nftables, say). Starts netd if it does not run.
  void rebuild_firewall();

  // Exposed ports: a URL on the host (network.expose_address, 127.0.0.1 by default) that
  // forwards HTTP and WebSocket traffic to a port of the box, for requests carrying the
  // generated credentials (shown once, at creation; kept only as hashes). The box needs a
  // network; a stopped box's exposures come back when it starts.
  struct Exposure {
    std::string id, box_id, box_name, auth, url, username;
    uint16_t port = 0, host_port = 0;
    int64_t created_at = 0;
    std::string token, password;  // at creation only
  };
  Exposure expose(const std::string& ref, int port, const std::string& auth);
  std::vector<Exposure> exposures(const std::string& ref);  // empty ref: every box's
  // By exposure id or box port.
  void unexpose(const std::string& ref, const std::string& which);

  // Metering. One pass records, for every box and snapshot, what it used since its last pass
  // (`upstream serve` runs it every few minutes; removing a box or snapshot records its last
  // interval). A report sums what overlaps [since, until), counting the not yet recorded tail
  // of what exists now, grouped by tenant, box, snapshot or a label's value.
  size_t meter_usage();
  struct UsageQuery {
    int64_t since = 0, until = 0;               // ms
    std::string by = "tenant";                  // tenant | box | label:KEY
    std::map<std::string, std::string> labels;  // only what carries all of these
  };
  struct UsageGroup {
    std::string key;
    size_t boxes = 0, snapshots = 0;
    double cpu_s = 0;           // active CPU seconds
    double running_s = 0;       // seconds boxes were running
    double core_running_s = 0;  // running seconds x CPUs (the limit, else the host's)
    double box_gb_months = 0;   // writable layers kept (GiB x 30 days)
    double snapshot_gb_months = 0;
    uint64_t memory_peak = 0;
    std::optional<double> cost, wall_clock_cost;  // with prices configured
  };
  struct UsageReport {
    int64_t since = 0, until = 0;
    std::vector<UsageGroup> groups;
    UsageGroup total;
    Prices prices;
  };
  UsageReport usage_report(const UsageQuery& q);

  // The warm pool (see PoolShape). A create whose image and limits match a shape takes a ready
  // box from it: renamed, labelled and configured for its new owner, never used before.
  struct PoolState {
    PoolShape shape;
    std::string key;
    size_t ready = 0;
    std::string error;  // why the shape cannot be filled (an image that is gone)
  };
  std::vector<PoolState> pool_status();
  // Creates what the pool lacks and removes pooled boxes that are dead, surplus or of shapes no
  // longer configured. One process fills at a time (others return at once). Returns what it did.
  std::vector<std::string> fill_pool();
  // Removes every pooled box; returns how many.
  size_t drain_pool();
  // Called (from any thread) when a create took a box from the pool or found it empty.
  void on_pool_claim(std::function<void()> f);

  // Snapshots. A running box is frozen for the moment of capture only (a btrfs snapshot of its
  // volume); hashing and storing the layer happen after it runs again.
  SnapshotRecord snapshot_box(const std::string& box_ref, const SnapshotOptions& opts);
  SnapshotRecord get_snapshot(const std::string& ref);
  std::vector<SnapshotRecord> list_snapshots(const std::string& kind = "");
  // Refused while a box was made from it. Layers no other snapshot lists are removed.
  void remove_snapshot(const std::string& ref);
  // A .tar.zst stream: a manifest, then every layer. Returns the bytes written.
  uint64_t export_snapshot(const std::string& ref, int out_fd);
  // Reads an export, checks every layer against its digest, and records the snapshot (under
  // `name` if given). A bad or truncated file changes nothing. The export must carry every
  // layer it lists, and its base image must be one the importer may name (a tenant's import,
  // by its labels: as for a create; the operator's: host or a published image), unless
  // `base_override` names another base (checked the same way).
  SnapshotRecord import_snapshot(int in_fd, const std::string& name,
                                 const std::map<std::string, std::string>& labels = {},
                                 const std::string& base_override = "");
  // `count` boxes from one spec (names NAME-1..NAME-N when a name is given and count > 1).
  // Boxes made from a snapshot share its layers; nothing is copied per box.
  std::vector<BoxRecord> create_boxes(BoxSpec spec, size_t count);
  // Snapshots a box and starts `count` boxes from it; the snapshot goes with the last of them.
  std::vector<BoxRecord> fork_box(const std::string& box_ref, size_t count, BoxSpec overrides);
  std::vector<BoxEvent> events(const std::string& ref);

  std::unique_ptr<ExecSession> start_exec(const std::string& ref, const ExecSpec& spec);
  std::optional<ExecRecord> get_exec(const std::string& ref, uint64_t seq);
  std::vector<ExecRecord> list_execs(const std::string& ref, bool running_only, size_t limit = 0);
  // Signals an exec's processes: while it runs, or, after its main process ended, whatever it
  // left running (its cgroup keeps them together).
  void kill_exec(const std::string& ref, uint64_t seq, int signal);
  // Processes per exec, for execs that are running or left processes behind.
  struct ExecProcesses {
    uint64_t seq = 0;
    bool running = false;
    size_t processes = 0;
  };
  std::vector<ExecProcesses> exec_processes(const std::string& ref);
  // Paths of an exec's full logs (which may not exist if it wrote nothing).
  std::pair<std::string, std::string> exec_log_paths(const std::string& ref, uint64_t seq);

  // File operations run inside the box as `user` (empty: the box's user). A stopped box is
  // mounted for the session and stays stopped.
  std::unique_ptr<FileSession> files(const std::string& ref, const std::string& user = "");

  SystemInfo system_info();
  // Brings every record in line with reality (dead inits, interrupted transitions, leftovers).
  void reconcile();
  // Rebuilds the host image now.
  void refresh_host_image();

  const EngineOptions& options() const { return opts_; }

  // Internal, used by sessions.
  struct Impl;
  Impl& impl() { return *impl_; }

 private:
  explicit Engine(const EngineOptions& opts);
  EngineOptions opts_;
  std::unique_ptr<Impl> impl_;
};

// A running foreground exec.
class ExecSession {
 public:
  virtual ~ExecSession() = default;
  virtual uint64_t seq() const = 0;
  virtual pid_t pid() const = 0;
  virtual std::string box_id() const = 0;
  // Already over (it could not start): the result is final.
  virtual bool finished() const = 0;

  // Descriptors for callers with their own event loop; -1 when not applicable.
  virtual int stdin_fd() const = 0;   // write end of the exec's stdin (or the tty)
  virtual int stdout_fd() const = 0;  // read end (tty output, when a tty is used)
  virtual int stderr_fd() const = 0;
  virtual int tty_fd() const = 0;
  virtual void close_stdin() = 0;

  virtual void signal(int sig) = 0;  // to the exec's process group; SIGKILL kills its whole tree
  virtual void resize(uint16_t rows, uint16_t cols) = 0;

  // Pumps output to `sink` (and the exec's logs) until the exec ends, then returns its record.
  // With stdin_source >= 0 and a stdin stream (or a tty), copies it to the exec. When event_fd
  // is readable, on_event is called (a front uses this for signals: forward, resize, kill).
  using Sink = std::function<void(Stream, std::string_view)>;
  virtual ExecRecord wait(const Sink& sink, int stdin_source = -1, int event_fd = -1,
                          const std::function<void()>& on_event = {}) = 0;
};

struct FileInfo {
  std::string name;
  std::string path;
  std::string type;  // file | dir | symlink | fifo | socket | char | block
  uint32_t mode = 0;
  uint64_t size = 0;
  int64_t mtime_ms = 0;
  uint32_t uid = 0, gid = 0;
  std::string target;
};

class FileSession {
 public:
  virtual ~FileSession() = default;
  virtual FileInfo stat(const std::string& path, bool follow = false) = 0;
  virtual std::vector<FileInfo> list(const std::string& path) = 0;
  // Reads a whole file (refusing files larger than max_bytes) or streams it to fd.
  virtual std::string read(const std::string& path, uint64_t max_bytes = 64ull << 20) = 0;
  virtual uint64_t read_to_fd(const std::string& path, int fd) = 0;
  virtual void write(const std::string& path, std::string_view data,
                     std::optional<uint32_t> mode = std::nullopt, bool mkdirs = false) = 0;
  virtual uint64_t write_from_fd(const std::string& path, int fd,
                                 std::optional<uint32_t> mode = std::nullopt,
                                 bool mkdirs = false) = 0;
  virtual void mkdir(const std::string& path, bool parents = true, uint32_t mode = 0755) = 0;
  virtual void remove(const std::string& path, bool recursive = false) = 0;
  virtual void move(const std::string& from, const std::string& to, bool overwrite = true) = 0;
  // Tar archives of a file or directory tree, and their extraction into a directory.
  virtual uint64_t download_tar(const std::string& path, int out_fd) = 0;
  virtual uint64_t upload_tar(const std::string& dir, int in_fd) = 0;
  // Copies between the box and the host's filesystem (what `upstream box cp` does).
  virtual void copy_out(const std::string& box_path, const std::string& host_path) = 0;
  virtual void copy_in(const std::string& host_path, const std::string& box_path) = 0;
};

// Checks every field of a spec; throws invalid_argument naming the bad one. Fronts call these
// before doing anything, so that bad input changes nothing.
void validate_box_spec(BoxSpec& spec);
void validate_exec_spec(const ExecSpec& spec);

// Normalises a path inside the box: relative paths are taken from `base`.
std::string box_path(const std::string& path, const std::string& base);

}  // namespace upstream
