#include "engine/engine.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <future>
#include <thread>

#include "common/error.h"
#include "common/init_protocol.h"
#include "common/ipc.h"
#include "common/proc.h"
#include "common/strings.h"
#include "common/time.h"
#include "engine/impl.h"
#include "runtime/caps.h"
#include "runtime/net.h"
#include "runtime/proc_view.h"
#include "runtime/seccomp.h"
#include "runtime/spawn.h"
#include "runtime/userns.h"

namespace upstream {

using nlohmann::json;

Engine::Impl::Impl(const EngineOptions& o, store::Db d, storage::Pool p, runtime::CgroupSystem cg)
    : opts(o),
      layout(o.home),
      db(std::move(d)),
      store(db),
      pool(std::move(p)),
      cgroups(std::move(cg)),
      slots(o.slots_dir),
      firewall(o.open_private, o.netd_exe, slots),
      tenants(o.tenants, o.tenant_overrides, pool, store),
      meter(store, pool, cgroups, cgroup_group) {}

bool wait_process_exit(pid_t pid, uint64_t start_time, int timeout_ms) {
  if (pid <= 0) return true;
  int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (fd < 0) return true;  // no such process
  UniqueFd pidfd(fd);
  // The descriptor pins one process; make sure it is the one we mean.
  auto st = process_start_time(pid);
  if (!st || *st != start_time) {
    ::waitpid(pid, nullptr, WNOHANG);
    return true;
  }
  pollfd p{pidfd.get(), POLLIN, 0};
  int64_t deadline = mono_ms() + timeout_ms;
  for (;;) {
    int left = static_cast<int>(std::max<int64_t>(0, deadline - mono_ms()));
    int r = ::poll(&p, 1, left);
    if (r > 0) break;
    if (r < 0 && errno == EINTR) continue;
    return false;
  }
  // Reap it if it happens to be our own child (a box started by this process).
  ::waitpid(pid, nullptr, WNOHANG);
  return true;
}

std::unique_ptr<Engine> Engine::open(const EngineOptions& opts) {
  if (::geteuid() != 0)
    throw Error(Errc::unavailable,
                "upstream needs root: boxes are built from namespaces, cgroups and mounts (run it "
                "with sudo)");
  std::unique_ptr<Engine> e(new Engine(opts));
  return e;
}

Engine::Engine(const EngineOptions& opts) : opts_(opts) {
  storage::Layout layout(opts_.home);
  struct stat st;
  if (::stat(layout.db().c_str(), &st) != 0) {
    // First use of this state directory.
    make_dirs(layout.home, 0700);
    ::chmod(layout.home.c_str(), 0700);
    for (const auto& d : {layout.run_dir(), layout.locks_dir(), layout.tmp_dir()})
      make_dirs(d, 0700);
  }
  debug_log("engine: opening");
  store::Db db = store::Db::open(layout.db());
  {
    store::BoxStore s(db);
    s.migrate();
  }
  debug_log("engine: database ready");
  storage::Pool pool = storage::Pool::open(layout, {opts_.storage, opts_.pool_size});
  debug_log("engine: pool ready");
  runtime::CgroupSystem cg = runtime::CgroupSystem::detect("/run/upstream/cgroup2");
  debug_log("engine: cgroups detected");
  impl_ = std::make_unique<Impl>(opts_, std::move(db), std::move(pool), std::move(cg));
  Impl& I = *impl_;
  I.layout.data_root = I.pool.data_root();
  I.layers = std::make_unique<storage::LayerStore>(I.pool);
  I.instance = I.store.meta("instance");
  if (I.instance.empty()) {
    I.instance = random_hex(8);
    I.store.set_meta("instance", I.instance);
  }
  I.cgroup_group = "upstream-" + I.instance;
  I.init_path = opts_.init_path.empty() ? materialize_init(layout.bin_dir()) : opts_.init_path;
  if (::access(I.init_path.c_str(), X_OK) != 0)
    throw_sys(Errc::unavailable, "box init " + I.init_path);
  reconcile();
}

Engine::~Engine() = default;

FileLock Engine::Impl::lock_box(const std::string& id) {
  return FileLock(layout.lock("box-" + id), 120'000);
}

storage::HostImage Engine::Impl::host_image(bool rebuild) {
  if (pool.kind() == storage::PoolKind::plain) {
    // Plain directories share a filesystem with the state directory: if that lies inside a
    // system directory, the box's layers would nest in the host's, which overlay refuses.
    for (const char* d : {"/usr/", "/etc/", "/var/", "/opt/"}) {
      struct stat sys, home;
      std::string dir = std::string(d).substr(0, std::strlen(d) - 1);
      if (starts_with(layout.home + "/", d) && ::stat(dir.c_str(), &sys) == 0 &&
          ::stat(layout.home.c_str(), &home) == 0 && sys.st_dev == home.st_dev)
        throw Error(
            Errc::unavailable,
            "the host image cannot be used with plain-directory storage while the state "
            "directory (" +
                layout.home + ") is inside " + dir +
                ": use btrfs storage, or set UPSTREAM_HOME outside /usr, /etc, /var and /opt");
    }
  }
  std::set<std::string> in_use;
  for (const auto& b : store.list())
    if (!b.host_generation.empty() && b.state != box_state::stopped)
      in_use.insert(b.host_generation);
  storage::HostImageOptions o;
  o.hidden = {layout.home, opts.slots_dir};
  o.max_age_ms = opts.host_image_max_age_ms;
  int64_t started = 0;
  if (opts.notice)
    o.on_build = [&](const std::string& why) {
      started = now_ms();
      opts.notice("Preparing the host image (" + why +
                  "): the host's system directories are read once, a few seconds ...");
    };
  storage::HostImage img = storage::ensure_host_image(layout, o, rebuild, in_use);
  if (started)
    opts.notice("The host image is ready (" +
                format_duration_ms(static_cast<uint64_t>(now_ms() - started)) + ")");
  return img;
}

storage::ImagePlan Engine::Impl::plan(const BoxRecord& b) { return plan_spec(b.spec.image); }

storage::ImagePlan Engine::Impl::plan_spec(const std::string& image) {
  storage::ImageRef ref = storage::parse_image(image);
  if (ref.kind == "snapshot") {
    auto snap = store.find_snapshot(ref.path);
    if (!snap)
      throw Error(Errc::failed_precondition, "snapshot or image '" + ref.path + "' is gone");
    storage::ImagePlan p = plan_spec(snap->base_image);
    // Each overlay gets the snapshot's layers for it, top first, above the base image's.
    for (auto& ov : p.overlays) {
      std::string name = ov.upper.substr(0, ov.upper.find('/'));
      std::vector<std::string> lowers;
      for (const auto& d : snap->layers) {
        if (!layers->exists(d))
          throw Error(Errc::internal, "layer " + d + " of snapshot " + snap->name + " is missing");
        struct stat st;
        std::string dir = layers->path(d) + "/" + name;
        if (::lstat(dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) lowers.push_back(dir);
      }
      ov.lowers.insert(ov.lowers.begin(), lowers.begin(), lowers.end());
    }
    return p;
  }
  if (ref.kind == "host") {
    storage::HostImage img = host_image();
    return storage::plan_image(ref, layout, &img);
  }
  return storage::plan_image(ref, layout, nullptr);
}

void Engine::Impl::prepare_image(BoxSpec& spec) {
  // A tenant's image is checked before it is parsed: parsing looks at host paths.
  tenants.check_image(tenant_of(spec.labels), spec.image);
  storage::ImageRef ref = storage::parse_image(spec.image);
  spec.image = ref.spec();
  std::string base = spec.image;
  if (ref.kind == "snapshot") {
    SnapshotRecord snap = store.resolve_snapshot(ref.path);
    spec.image = snap.name;
    // The snapshot's configuration, under what the caller set.
    std::vector<std::string> env = snap.config.env;
    env.insert(env.end(), spec.env.begin(), spec.env.end());
    spec.env = env;
    Limits& l = spec.limits;
    const Limits& s = snap.config.limits;
    if (!l.cpu_milli) l.cpu_milli = s.cpu_milli;
    if (!l.memory) l.memory = s.memory;
    if (!l.pids) l.pids = s.pids;
    if (!l.disk) l.disk = s.disk;
    BoxSpec defaults;
    if (spec.user == defaults.user) spec.user = snap.config.user;
    if (spec.workdir == defaults.workdir) spec.workdir = snap.config.workdir;
    base = snap.base_image;
  }
  storage::ImageRef b = storage::parse_image(base);
  if (b.kind == "tar") storage::import_tarball(b.path, layout);
  if (b.kind == "host") host_image();
}

void Engine::Impl::start_init(BoxRecord& b, const std::string& reason, bool record_running) {
  storage::ImagePlan plan = this->plan(b);
  start_init(b, plan, reason, record_running);
}

void Engine::Impl::start_init(BoxRecord& b, const storage::ImagePlan& plan,
                              const std::string& reason, bool record_running) {
  int64_t started_us = mono_us();
  const std::string vol = volume(b.id);
  storage::refresh_volume(vol, plan, b.name);
  runtime::BoxCgroup cg = cgroup(b.id);
  cg.destroy(2000);  // whatever an earlier crash left
  runtime::SlotLease lease = slots.acquire();
  uint32_t base = runtime::slot_uid_base(lease.slot);
  bool networked = b.spec.network != NetworkMode::none;
  egress::NetAddrs net;
  if (networked) {
    net = egress::net_addrs(lease.slot);
    std::lock_guard g(mu);
    firewall.ensure();
  }
  runtime::CgroupLimits lim{b.spec.limits.cpu_milli, b.spec.limits.memory, b.spec.limits.pids};
  cg.create(lim, base);

  try {
    UniqueFd userns = runtime::make_userns(base, runtime::kIdsPerSlot);
    initproto::Config c;
    c.box_id = b.id;
    c.hostname = b.name;
    c.uid_base = base;
    c.uid_count = runtime::kIdsPerSlot;
    c.rootfs = vol + "/rootfs";
    c.volume_fs = vol + "/fs";
    c.overlays = plan.overlays;
    c.socket_path = layout.socket(b.id);
    c.cgroup_dir = cg.v2_dir();
    c.caps = runtime::default_capabilities();
    c.rlimits = {{RLIMIT_NOFILE, 1024, 524288}, {RLIMIT_CORE, 0, RLIM_INFINITY}};
    uint64_t mem = b.spec.limits.memory.value_or(0);
    c.shm_bytes = mem ? std::max<uint64_t>(mem / 2, 1 << 20) : (1ull << 30);
    json cfg = {{"box_id", c.box_id},
                {"hostname", c.hostname},
                {"uid_base", c.uid_base},
                {"uid_count", c.uid_count},
                {"rootfs", c.rootfs},
                {"volume_fs", c.volume_fs},
                {"overlays", c.overlays},
                {"socket_path", c.socket_path},
                {"cgroup_dir", c.cgroup_dir},
                {"seccomp", base64_encode(runtime::default_seccomp_bpf())},
                {"caps", c.caps},
                {"rlimits", c.rlimits},
                {"shm_bytes", c.shm_bytes},
                {"run_bytes", c.run_bytes},
                {"wait_network", networked}};
    if (std::string view = opts.proc_view ? runtime::ensure_proc_view() : ""; !view.empty()) {
      cfg["proc_view"] = view;
      cfg["proc_view_files"] = runtime::proc_view_files();
    }
    runtime::InitSpawn sp;
    sp.init_path = init_path;
    sp.box_id = b.id;
    sp.userns_fd = userns.get();
    sp.slot_lock_fd = lease.lock.get();
    sp.cgroup_procs = cg.procs_files();
    sp.config = cfg;
    // The box's own firewall rules (an `nft` run for a proxied box, ~20 ms) are made while
    // the init starts; its network is attached only once they are in place.
    std::future<void> rules;
    if (networked) {
      rules = std::async(std::launch::async,
                         [this, slot = lease.slot, spec = b.spec] { firewall.set(slot, spec); });
      sp.attach_network = [&](pid_t pid) {
        rules.get();
        runtime::attach_veth(pid, net);
      };
    }
    runtime::InitProcess proc = runtime::spawn_init(sp);
    debug_log("box " + b.id + " init started in " + std::to_string(mono_us() - started_us) +
              " us; init phases (us since exec): " + proc.timings_us.dump());
    b.init_pid = proc.pid;
    b.init_start = proc.start_time;
    b.slot = lease.slot;
    b.host_generation = plan.host_generation;
    net_up(b);  // a box without a network: only its exposed ports, if any
    if (record_running) {
      std::lock_guard g(mu);
      store.mark_running(b.id, proc.pid, proc.start_time, lease.slot, plan.host_generation, reason);
      b.state = box_state::running;
      b.state_reason = reason;
      b.started_at = now_ms();
    }
  } catch (...) {
    cg.destroy(2000);
    ::unlink(layout.socket(b.id).c_str());
    net_down(lease.slot, b.spec);
    throw;
  }
}

BoxRecord Engine::set_network(const std::string& ref, NetworkMode mode, Egress egress,
                              bool keep_headers) {
  Impl& I = *impl_;
  std::lock_guard g(I.mu);
  auto held = I.hold_box(ref);
  BoxRecord& b = held.box;
  BoxSpec spec = b.spec;
  spec.network = mode;
  if (keep_headers && mode != NetworkMode::none) egress.headers = b.spec.egress.headers;
  spec.egress = egress;
  validate_box_spec(spec);
  if (mode == b.spec.network && spec.egress == b.spec.egress) return b;
  // A box gaining headers comes to trust the egress CA, which needs it running (validation
  // keeps headers off boxes without a network).
  bool gains_headers = !spec.egress.headers.empty() && b.spec.egress.headers.empty();
  if (b.state == box_state::paused && gains_headers)
    b = I.wake(b, "resumed to trust the egress CA");
  if (box_state::alive(b.state) && b.slot) {
    egress::NetAddrs net = egress::net_addrs(*b.slot);
    if (mode == NetworkMode::none) {
      runtime::detach_veth(net);
      I.net_down(*b.slot, b.spec);
      BoxRecord next = b;
      next.spec = spec;
      I.write_net_policy(next);  // its exposed ports stay
    } else {
      I.firewall.ensure();
      I.firewall.set(*b.slot, spec);
      if (b.spec.network == NetworkMode::none) runtime::attach_veth(b.init_pid, net);
      BoxRecord next = b;
      next.spec = spec;
      I.write_net_policy(next);
      if (gains_headers) I.trust_egress_ca(next);
    }
  } else if (!box_state::alive(b.state) && b.state != box_state::stopped &&
             b.state != box_state::archived) {
    throw Error(Errc::failed_precondition, "box " + b.name + " is " + b.state);
  }
  I.store.update_spec(b.id, spec);
  I.store.set_state(
      b.id, b.state,
      mode == b.spec.network ? "egress policy changed" : "network set to " + to_string(mode));
  return *I.store.find_id(b.id);
}

runtime::CgroupUsage Engine::Impl::stop_init(const BoxRecord& b, int64_t grace_ms) {
  debug_log("stopping init");
  runtime::BoxCgroup cg = cgroup(b.id);
  // A paused box cannot answer or act on signals until it is thawed.
  if (cg.frozen()) cg.set_frozen(false, 1000);
  bool asked = false;
  if (process_matches(b.init_pid, b.init_start)) {
    try {
      UniqueFd c = ipc::connect(layout.socket(b.id));
      ipc::send(c.get(), {{"op", "stop"}, {"grace_ms", grace_ms}});
      asked = true;
      // The init answers once everything in the box has exited, then exits itself.
      ipc::recv_wait(c.get(), static_cast<int>(grace_ms + 5000));
    } catch (const Error&) {
    }
  }
  debug_log("init answered");
  if (!wait_process_exit(b.init_pid, b.init_start, asked ? 5000 : 0)) {
    cg.kill_all();
    wait_process_exit(b.init_pid, b.init_start, 5000);
  }
  debug_log("init exited");
  runtime::CgroupUsage u = cg.usage();
  if (!cg.destroy(5000)) throw Error(Errc::internal, "could not remove the cgroups of box " + b.id);
  ::unlink(layout.socket(b.id).c_str());
  if (b.slot) net_down(*b.slot, b.spec);
  return u;
}

BoxRecord Engine::Impl::check_alive(const BoxRecord& b) {
  if (!box_state::alive(b.state)) return b;
  if (process_matches(b.init_pid, b.init_start)) return b;
  auto lock = lock_box(b.id);
  auto fresh = store.find_id(b.id);
  return fresh ? check_alive_locked(*fresh) : b;
}

BoxRecord Engine::Impl::check_alive_locked(const BoxRecord& b) {
  if (!box_state::alive(b.state) || process_matches(b.init_pid, b.init_start)) return b;
  runtime::BoxCgroup cg = cgroup(b.id);
  runtime::CgroupUsage u = cg.usage();
  cg.destroy(5000);
  ::unlink(layout.socket(b.id).c_str());
  if (b.slot) net_down(*b.slot, b.spec);
  refresh_execs(b);
  std::string reason =
      store.meta("boot_id") != boot_id() ? "host restarted" : "box init exited unexpectedly";
  store.mark_stopped(b.id, reason, u.cpu_us, u.memory_peak, u.oom_kills);
  return *store.find_id(b.id);
}

Engine::Impl::HeldBox Engine::Impl::hold_box(const std::string& ref) {
  BoxRecord b = check_alive(store.resolve(ref));
  HeldBox held{b, lock_box(b.id)};
  auto fresh = store.find_id(b.id);
  if (!fresh) throw Error(Errc::not_found, "box " + b.name + " was removed meanwhile");
  held.box = check_alive_locked(*fresh);
  return held;
}

void Engine::Impl::cleanup_failed_create(const std::string& id) {
  cgroup(id).destroy(5000);
  ::unlink(layout.socket(id).c_str());
  pool.destroy_volume(id);
  try {
    remove_tree(net_stats_dir(id));
  } catch (const Error&) {
  }
  store.delete_box(id);
}

BoxRecord Engine::Impl::wake(const BoxRecord& b, const std::string& why) {
  if (b.state != box_state::paused) return b;
  auto lock = lock_box(b.id);
  auto now = store.find_id(b.id);
  if (!now) throw Error(Errc::not_found, "box " + b.name + " was removed meanwhile");
  BoxRecord fresh = check_alive_locked(*now);
  if (fresh.state != box_state::paused) return fresh;
  thaw(fresh, why);
  return *store.find_id(b.id);
}

void Engine::Impl::thaw(const BoxRecord& b, const std::string& why) {
  runtime::BoxCgroup cg = cgroup(b.id);
  if (!cg.set_frozen(false, 5000))
    throw Error(Errc::internal,
                "box " + b.name + " could not be resumed: its processes did not thaw");
  store.set_state(b.id, box_state::running, why);
}

UniqueFd Engine::Impl::connect(const BoxRecord& b) {
  try {
    return ipc::connect(layout.socket(b.id));
  } catch (const Error&) {
    BoxRecord now = check_alive(b);
    throw Error(Errc::failed_precondition,
                "box " + b.name + " is not running (" + now.state +
                    (now.state_reason.empty() ? "" : ": " + now.state_reason) + ")");
  }
}

// ---------------------------------------------------------------------------------------------

void Engine::Impl::apply_default_limits(BoxSpec& spec) {
  const Limits& d = opts.default_limits;
  Limits& l = spec.limits;
  if (!l.memory) l.memory = d.memory;
  if (!l.pids) l.pids = d.pids;
  if (!l.cpu_milli) l.cpu_milli = d.cpu_milli;
  if (!l.disk && pool.supports_limits()) l.disk = d.disk;
  if (l.disk && !pool.supports_limits())
    throw Error(Errc::unavailable,
                "disk limits need the btrfs storage pool (" + pool.unavailable_reason() + ")");
}

void Engine::check_image(const std::string& image,
                         const std::map<std::string, std::string>& labels) {
  Impl& I = *impl_;
  std::lock_guard g(I.mu);
  I.tenants.check_image(tenant_of(labels), image);
  storage::ImageRef ref = storage::parse_image(image);
  if (ref.kind == "snapshot") I.store.resolve_snapshot(ref.path);
}

BoxRecord Engine::create_box(BoxSpec spec) {
  Impl& I = *impl_;
  validate_box_spec(spec);
  std::unique_lock g(I.mu);
  // Images are resolved before anything is recorded: a bad image changes nothing.
  I.prepare_image(spec);
  debug_log("image ready");
  I.apply_default_limits(spec);
  I.tenants.check_limits(tenant_of(spec.labels), spec, 1);
  if (auto b = I.claim_pooled(spec)) return *b;
  return I.create_new(spec, g);
}

BoxRecord Engine::Impl::create_new(BoxSpec spec, std::unique_lock<std::recursive_mutex>& g,
                                   const std::string& pool_key) {
  Engine::Impl& I = *this;
  const Limits& l = spec.limits;
  BoxRecord b;
  b.id = random_hex(12);
  if (spec.name.empty()) {
    spec.name = "box-" + b.id.substr(0, 6);
  }
  b.name = spec.name;
  b.spec = spec;
  b.state = box_state::creating;
  b.created_at = now_ms();
  b.owner_pid = ::getpid();
  b.owner_start = process_start_time(::getpid()).value_or(0);
  b.pool = pool_key;
  I.store.insert_box(b);
  storage::ImagePlan plan;
  try {
    plan = I.plan(b);
  } catch (...) {
    I.store.delete_box(b.id);
    throw;
  }
  // The rest runs without the engine's mutex (other threads may create boxes meanwhile); only
  // the records need it.
  g.unlock();
  auto lock = I.lock_box(b.id);
  try {
    I.pool.create_volume(
        b.id, l.disk,
        I.pool.supports_limits() ? std::optional<uint64_t>(opts.log_limit) : std::nullopt);
    storage::prepare_volume(I.volume(b.id), plan, b.name);
    debug_log("volume ready");
    I.start_init(b, plan, pool_key.empty() ? "created" : "created for the warm pool", true);
  } catch (...) {
    try {
      std::lock_guard g2(I.mu);
      I.cleanup_failed_create(b.id);
    } catch (...) {
    }
    throw;
  }
  std::lock_guard g2(I.mu);
  return *I.store.find_id(b.id);
}

BoxRecord Engine::get_box(const std::string& ref) {
  std::lock_guard g(impl_->mu);
  return impl_->check_alive(impl_->store.resolve(ref));
}

std::vector<BoxRecord> Engine::list_boxes(const store::BoxFilter& filter) {
  std::lock_guard g(impl_->mu);
  std::vector<BoxRecord> out;
  store::BoxFilter f = filter;
  f.pooled = store::BoxFilter::Pooled::exclude;
  std::string wanted = f.state;
  f.state.clear();  // the state may change below, so filter afterwards
  for (auto& b : impl_->store.list(f)) {
    BoxRecord r = impl_->check_alive(b);
    if (wanted.empty() || r.state == wanted) out.push_back(std::move(r));
  }
  return out;
}

BoxRecord Engine::start_box(const std::string& ref) {
  Impl& I = *impl_;
  std::lock_guard g(I.mu);
  auto held = I.hold_box(ref);
  BoxRecord& b = held.box;
  if (b.state == box_state::running) return b;
  if (b.state == box_state::paused) {
    I.thaw(b, "resumed by start");
    return *I.store.find_id(b.id);
  }
  if (b.state == box_state::archived) b = I.unarchive(b, "unarchived by start");
  if (b.state != box_state::stopped)
    throw Error(Errc::failed_precondition, "box " + b.name + " is " + b.state + ", not stopped");
  I.tenants.check_limits(tenant_of(b.spec.labels), b.spec, 1, b.id);
  I.store.set_state(b.id, box_state::starting, "start requested");
  I.store.set_owner(b.id, ::getpid(), process_start_time(::getpid()).value_or(0));
  try {
    I.start_init(b, "started", true);
  } catch (const Error& e) {
    I.store.mark_stopped(b.id, std::string("start failed: ") + e.what(), 0, 0, 0);
    throw;
  }
  return *I.store.find_id(b.id);
}

BoxRecord Engine::stop_box(const std::string& ref, int64_t grace_ms, const std::string& reason) {
  Impl& I = *impl_;
  std::lock_guard g(I.mu);
  auto held = I.hold_box(ref);
  BoxRecord& b = held.box;
  if (b.state == box_state::stopped || b.state == box_state::archived) return b;
  if (!box_state::alive(b.state) && b.state != box_state::stopping)
    throw Error(Errc::failed_precondition, "box " + b.name + " is " + b.state);
  I.store.set_state(b.id, box_state::stopping, "stop requested");
  I.store.set_owner(b.id, ::getpid(), process_start_time(::getpid()).value_or(0));
  runtime::CgroupUsage u = I.stop_init(b, grace_ms);
  I.refresh_execs(b);
  I.store.mark_stopped(b.id, reason, u.cpu_us, u.memory_peak, u.oom_kills);
  return *I.store.find_id(b.id);
}

void Engine::remove_box(const std::string& ref, bool force) {
  Impl& I = *impl_;
  std::lock_guard g(I.mu);
  auto held = I.hold_box(ref);
  BoxRecord& b = held.box;
  if (box_state::alive(b.state) && !force)
    throw Error(Errc::failed_precondition,
                "box " + b.name + " is " + b.state + "; stop it first or remove it with --force");
  try {
    I.meter.record_box(b);  // its last interval, kept after it is gone
  } catch (const Error&) {
  }
  I.store.set_state(b.id, box_state::removing, "remove requested");
  I.store.set_owner(b.id, ::getpid(), process_start_time(::getpid()).value_or(0));
  if (b.init_pid) I.stop_init(b, 0);
  I.cleanup_failed_create(b.id);
  debug_log("box removed");
  if (!b.archive_layer.empty()) I.gc_layers();
  // A fork's snapshot goes with the last box made from it.
  if (storage::parse_image(b.spec.image).kind == "snapshot")
    if (auto s = I.store.find_snapshot(b.spec.image))
      if (s->ephemeral && I.store.boxes_using(s->name).empty()) {
        try {
          I.remove_snapshot_locked(*s);
        } catch (const Error&) {
        }
      }
}

BoxRecord Engine::pause_box(const std::string& ref, const std::string& reason) {
  Impl& I = *impl_;
  std::lock_guard g(I.mu);
  auto held = I.hold_box(ref);
  BoxRecord& b = held.box;
  if (b.state == box_state::paused) return b;
  if (b.state != box_state::running)
    throw Error(Errc::failed_precondition,
                "box " + b.name + " is " + b.state + "; only a running box can be paused");
  runtime::BoxCgroup cg = I.cgroup(b.id);
  if (!cg.set_frozen(true, 5000)) {
    cg.set_frozen(false, 1000);
    throw Error(Errc::internal,
                "box " + b.name + " could not be paused: its processes did not freeze within 5 s");
  }
  I.store.set_state(b.id, box_state::paused, reason);
  return *I.store.find_id(b.id);
}

BoxRecord Engine::Impl::unarchive(const BoxRecord& b, const std::string& why) {
  if (b.state != box_state::archived) return b;
  std::string fs = volume(b.id) + "/fs";
  if (!layers->exists(b.archive_layer))
    throw Error(Errc::internal,
                "the archive of box " + b.name + " (layer " + b.archive_layer + ") is missing");
  // Whatever an interrupted archive or unarchive left is replaced.
  remove_tree(fs);
  std::string tmp = fs + ".unpacking";
  remove_tree(tmp);
  make_dirs(tmp, 0700);
  std::string layer = layers->path(b.archive_layer);
  DIR* d = ::opendir(layer.c_str());
  if (!d) throw_sys("read " + layer);
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d))
    if (e->d_name[0] != '.') names.emplace_back(e->d_name);
  ::closedir(d);
  for (const auto& n : names) {
    make_dirs(tmp + "/" + n, 0700);
    pool.copy_tree(layer + "/" + n, tmp + "/" + n + "/upper");
  }
  {
    UniqueFd v(::open(volume(b.id).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (v) ::syncfs(v.get());
  }
  if (::rename(tmp.c_str(), fs.c_str()) != 0) throw_sys("rename " + tmp);
  crash_point("unarchive-unpacked");
  store.set_archived(b.id, "", box_state::stopped, why);
  gc_layers();
  return *store.find_id(b.id);
}

BoxRecord Engine::archive_box(const std::string& ref, const std::string& reason) {
  Impl& I = *impl_;
  std::string staging;
  BoxRecord b;
  {
    std::lock_guard g(I.mu);
    b = I.check_alive(I.store.resolve(ref));
  }
  auto lock = I.lock_box(b.id);
  {
    std::lock_guard g(I.mu);
    b = *I.store.find_id(b.id);
    if (b.state == box_state::archived) return b;
    if (b.state != box_state::stopped)
      throw Error(Errc::failed_precondition,
                  "box " + b.name + " is " + b.state + "; only a stopped box can be archived");
  }
  // The box's files as a layer (its identity files included: it is the same box).
  staging = I.layers->stage_volume(b.id, {});
  std::optional<FileLock> layers_lock;
  layers_lock.emplace(I.layout.lock("layers"), 120'000);
  storage::LayerInfo info = I.layers->commit(staging);
  crash_point("archive-committed");
  {
    std::lock_guard g(I.mu);
    I.store.insert_layer({info.digest, info.bytes, info.files});
    I.store.set_archived(b.id, info.digest, box_state::archived, reason);
  }
  layers_lock.reset();
  crash_point("archive-recorded");
  // Only now is the working directory freed.
  remove_tree(I.volume(b.id) + "/fs");
  std::lock_guard g(I.mu);
  return *I.store.find_id(b.id);
}

BoxRecord Engine::resume_box(const std::string& ref) {
  Impl& I = *impl_;
  std::lock_guard g(I.mu);
  auto held = I.hold_box(ref);
  BoxRecord& b = held.box;
  if (b.state == box_state::running) return b;
  if (b.state != box_state::paused)
    throw Error(Errc::failed_precondition,
                "box " + b.name + " is " + b.state + ", not paused" +
                    (b.state == box_state::stopped ? " (start it with `upstream box start`)" : ""));
  I.thaw(b, "resumed");
  return *I.store.find_id(b.id);
}

std::vector<std::string> Engine::enforce_policies(PolicyState& state, double cpu_threshold) {
  Impl& I = *impl_;
  std::vector<std::string> done;
  int64_t now = now_ms();
  std::vector<BoxRecord> boxes;
  {
    std::lock_guard g(I.mu);
    store::BoxFilter f;
    f.pooled = store::BoxFilter::Pooled::exclude;  // the pool keeps its own boxes
    boxes = I.store.list(f);
  }
  std::set<std::string> seen;
  for (const auto& b : boxes) {
    const Policy& p = b.spec.policy;
    try {
      if (b.state == box_state::running) {
        seen.insert(b.id);
        // CPU used since the last pass counts as activity.
        uint64_t cpu = I.cgroup(b.id).usage().cpu_us;
        auto it = state.cpu.find(b.id);
        bool busy = false;
        if (it != state.cpu.end() && now > it->second.second && cpu >= it->second.first) {
          double share = static_cast<double>(cpu - it->second.first) / 1000.0 /
                         static_cast<double>(now - it->second.second);
          busy = share > cpu_threshold;
        }
        state.cpu[b.id] = {cpu, now};
        if (busy) {
          std::lock_guard g(I.mu);
          I.store.touch(b.id, now);
          continue;
        }
        if (p.keep_alive || p.auto_pause_ms <= 0) continue;
        int64_t last = std::max({b.last_active_at, b.state_since, b.created_at});
        if (now - last < p.auto_pause_ms) continue;
        {
          // An exec someone is waiting on is activity, however quiet.
          std::lock_guard g(I.mu);
          bool waited_on = false;
          for (const auto& e : I.store.list_execs(b.id, true, 0)) waited_on |= !e.background;
          if (waited_on) continue;
        }
        pause_box(b.id,
                  "paused: idle for " + format_duration_ms(static_cast<uint64_t>(now - last)));
        done.push_back("paused " + b.name);
      } else if (b.state == box_state::stopped && p.auto_archive_ms > 0 &&
                 now - b.state_since >= p.auto_archive_ms) {
        archive_box(b.id, "archived: stopped for " +
                              format_duration_ms(static_cast<uint64_t>(now - b.state_since)));
        done.push_back("archived " + b.name);
      } else if (b.state == box_state::paused && p.auto_stop_ms > 0 &&
                 now - b.state_since >= p.auto_stop_ms) {
        stop_box(b.id, 10000,
                 "stopped: paused for " +
                     format_duration_ms(static_cast<uint64_t>(now - b.state_since)));
        done.push_back("stopped " + b.name);
      }
    } catch (const Error& e) {
      done.push_back("policy of " + b.name + " failed: " + e.what());
    }
  }
  for (auto it = state.cpu.begin(); it != state.cpu.end();)
    it = seen.count(it->first) ? std::next(it) : state.cpu.erase(it);
  return done;
}

std::vector<BoxEvent> Engine::events(const std::string& ref) {
  std::lock_guard g(impl_->mu);
  return impl_->store.events(impl_->store.resolve(ref).id);
}

SystemInfo Engine::system_info() {
  Impl& I = *impl_;
  std::lock_guard g(I.mu);
  SystemInfo s;
  s.version = UPSTREAM_VERSION;
  s.home = I.layout.home;
  s.storage = I.pool.describe();
  s.cgroups = I.cgroups.describe();
  std::string why = "off in the configuration (proc_view)";
  std::string view = I.opts.proc_view ? runtime::ensure_proc_view(&why) : "";
  s.proc_view =
      view.empty() ? "host's (" + why + ")" : "the box's own limits (lxcfs at " + view + ")";
  utsname u;
  ::uname(&u);
  s.kernel = std::string(u.sysname) + " " + u.release;
  s.instance = I.instance;
  if (auto h = storage::current_host_image(I.layout))
    s.host_image = h->generation + " (" + std::to_string(h->masked) + " host paths hidden, built " +
                   format_time(h->built_at) + ")";
  else
    s.host_image = "not built yet (built on first use)";
  for (const auto& b : I.store.list()) {
    if (!b.pool.empty()) {
      s.pooled += b.state == box_state::running;
      continue;
    }
    s.boxes++;
    if (b.state == box_state::running) s.running++;
    if (b.state == box_state::paused) s.paused++;
  }
  return s;
}

void Engine::refresh_host_image() {
  std::lock_guard g(impl_->mu);
  impl_->host_image(true);
}

}  // namespace upstream
