// Engine internals shared by its source files.
#pragma once

#include <mutex>
#include <optional>
#include <set>
#include <string>

#include "common/fd.h"
#include "engine/engine.h"
#include "engine/host_firewall.h"
#include "engine/meter.h"
#include "engine/tenants.h"
#include "model/egress.h"
#include "netd/netd.h"
#include "runtime/cgroup.h"
#include "runtime/slots.h"
#include "storage/host_image.h"
#include "storage/image.h"
#include "storage/layers.h"
#include "storage/layout.h"
#include "storage/pool.h"
#include "store/box_store.h"
#include "store/db.h"

namespace upstream {

struct Engine::Impl {
  Impl(const EngineOptions& opts, store::Db db, storage::Pool pool, runtime::CgroupSystem cg);

  const EngineOptions& opts;
  storage::Layout layout;
  store::Db db;
  store::BoxStore store;
  storage::Pool pool;
  runtime::CgroupSystem cgroups;
  runtime::SlotAllocator slots;
  std::unique_ptr<storage::LayerStore> layers;
  std::string init_path;
  std::string instance;
  std::string cgroup_group;  // "upstream-<instance>"
  std::recursive_mutex mu;   // the database connection is shared by this engine's users

  std::function<void()> pool_listener;
  // Box networks (network.cc). The host side (netd, the firewall: host_firewall.h) is made
  // ready before a box with a network starts; a box's own rules are set before its network is
  // attached. ensure() and rebuild() under mu.
  HostFirewall firewall;
  // Writes the policy netd reads for a running box, and trusts the egress CA in the box if it
  // has headers to inject. No-op for network none.
  void net_up(const BoxRecord& b);
  void write_net_policy(const BoxRecord& b);  // the policy file alone
  std::vector<egress::Exposure> load_exposures(const std::string& box_id);
  // Removes a slot's policy and rules (the box stopped or lost its network).
  void net_down(uint32_t slot, const BoxSpec& spec);
  std::string net_stats_dir(const std::string& box_id) const;  // counters, exposures
  std::string net_stats_path(const std::string& box_id) const;
  void save_exposures(const std::string& box_id, const std::vector<egress::Exposure>& list);
  void trust_ca_in_box(const BoxRecord& b, const std::string& pem);
  void trust_egress_ca(const BoxRecord& b);  // the installation's CA, made on first use

  // What tenants may name and take (tenants.h); the caller holds mu.
  TenantPolicy tenants;

  // The defaults and checks every create applies to its spec (after prepare_image).
  void apply_default_limits(BoxSpec& spec);
  // Creates and starts a new box; `pool` marks it as waiting in the warm pool. The caller holds
  // `g` (the engine's mutex), which is released while the box starts.
  BoxRecord create_new(BoxSpec spec, std::unique_lock<std::recursive_mutex>& g,
                       const std::string& pool = "");
  // The warm pool: the key of a resolved spec's shape, and a claim of a ready box for `spec`
  // (caller holds mu). nullopt: none ready.
  std::string pool_key(const BoxSpec& spec) const;
  // A shape as the spec a create would resolve it to (image prepared, default limits).
  BoxSpec shape_spec(const PoolShape& shape);
  std::optional<BoxRecord> claim_pooled(const BoxSpec& spec);
  void remove_pooled(const BoxRecord& b, const std::string& reason);
  // Metering (meter.h); the caller holds mu.
  UsageMeter meter;

  std::string volume(const std::string& id) const { return pool.volume_path(id); }
  std::string log_path(const std::string& id, uint64_t seq, const char* ext) const {
    return volume(id) + "/logs/" + std::to_string(seq) + "." + ext;
  }
  runtime::BoxCgroup cgroup(const std::string& id) const {
    return runtime::BoxCgroup(cgroups, cgroup_group, id);
  }

  storage::HostImage host_image(bool rebuild = false);
  storage::ImagePlan plan(const BoxRecord& b);
  // The plan of an image spec (a snapshot's layers over its base image).
  storage::ImagePlan plan_spec(const std::string& image);
  // Resolves what a create needs of its image before anything is recorded (imports tarballs,
  // builds the host image) and fills a snapshot's configuration into the spec.
  void prepare_image(BoxSpec& spec);
  // Removes layers no snapshot lists, and abandoned staging directories (skipped if another
  // process is storing a layer right now).
  void gc_layers();
  void remove_snapshot_locked(const SnapshotRecord& s);

  // Lifecycle pieces; the caller holds the box lock.
  void start_init(BoxRecord& b, const std::string& reason, bool record_running);
  // With the plan already made: needs the engine's mutex only to record the start.
  void start_init(BoxRecord& b, const storage::ImagePlan& plan, const std::string& reason,
                  bool record_running);
  // Stops a box's init (gracefully for grace_ms, then by force), waits for it, cleans up its
  // cgroups and socket. Returns the usage of the run that ended.
  runtime::CgroupUsage stop_init(const BoxRecord& b, int64_t grace_ms);
  // If the record says running but the init is gone, records the stop. Returns the fresh record.
  // check_alive takes the box lock to record it; check_alive_locked is for a caller holding it
  // (the lock is a flock on a file opened anew: taking it twice would wait for itself).
  BoxRecord check_alive(const BoxRecord& b);
  BoxRecord check_alive_locked(const BoxRecord& b);
  // The prologue of every change to one box: the reference resolved, the box's lock taken and
  // its record read again under it (a box whose init died is recorded as stopped; a box removed
  // meanwhile is not found). The caller holds the engine's mutex.
  struct HeldBox {
    BoxRecord box;
    FileLock lock;
  };
  HeldBox hold_box(const std::string& ref);
  void finish_exec_from_status(ExecRecord e, const BoxRecord& box);
  void refresh_execs(const BoxRecord& box);
  void cleanup_failed_create(const std::string& id);
  // Work sent to a paused box resumes it (the caller does not hold the box lock); returns the
  // fresh record. thaw: the caller holds the lock.
  BoxRecord wake(const BoxRecord& b, const std::string& why);
  void thaw(const BoxRecord& b, const std::string& why);
  // Unpacks an archived box's files into its volume; the box becomes stopped. The caller holds
  // the box lock.
  BoxRecord unarchive(const BoxRecord& b, const std::string& why);
  FileLock lock_box(const std::string& id);
  UniqueFd connect(const BoxRecord& b);
  std::string read_tail(const std::string& path, size_t max, uint64_t& total);
  // The most an archive uploaded into a box may unpack to: its disk limit (else 64 GiB).
  uint64_t upload_limit(const BoxRecord& b) const {
    return b.spec.limits.disk.value_or(64ull << 30);
  }
};

// The tenant a box's or snapshot's labels name (empty: the operator's).
std::string tenant_of(const std::map<std::string, std::string>& labels);

// Fault injection for the crash tests: UPSTREAM_CRASH_AT=<point> kills this process there.
void crash_point(const char* name);

// Waits for a process that may or may not be our child to exit. True if it did in time.
bool wait_process_exit(pid_t pid, uint64_t start_time, int timeout_ms);

// Materialises the embedded init binary under the state directory; returns its path.
std::string materialize_init(const std::string& bin_dir);

}  // namespace upstream
