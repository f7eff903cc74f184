// The warm pool: boxes created and started ahead of demand for configured (image, limits)
// shapes. A pooled box has no owner, labels or name of anyone's; a create that matches its shape
// takes it in one database transaction, renames it and hands it out. It is never returned to the
// pool: a removed box is gone, so a pooled box carries nothing of anyone else.
#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <cstring>
#include <thread>

#include "common/error.h"
#include "common/fd.h"
#include "common/ipc.h"
#include "common/proc.h"
#include "common/time.h"
#include "engine/impl.h"
#include "model/egress.h"

namespace upstream {

using nlohmann::json;

namespace {

// The kernel's hostname of a running box, set from a thread that enters its UTS namespace (the
// box's own init may not call sethostname; its seccomp filter forbids it).
void set_box_hostname(pid_t init_pid, const std::string& name) {
  std::string err;
  std::thread t([&] {
    UniqueFd ns(
        ::open(("/proc/" + std::to_string(init_pid) + "/ns/uts").c_str(), O_RDONLY | O_CLOEXEC));
    if (!ns) {
      err = std::string("open its UTS namespace: ") + std::strerror(errno);
      return;
    }
    if (::setns(ns.get(), CLONE_NEWUTS) != 0 || ::sethostname(name.data(), name.size()) != 0)
      err = std::string("set its hostname: ") + std::strerror(errno);
  });
  t.join();
  if (!err.empty()) throw Error(Errc::internal, err);
}

}  // namespace

std::string Engine::Impl::pool_key(const BoxSpec& spec) const {
  json key = {{"image", spec.image},
              {"limits", limits_to_json(spec.limits)},
              {"network", to_string(spec.network)}};
  // Pooled boxes never have an egress policy: a create with one never takes a pooled box.
  if (!(spec.egress == Egress{})) key["egress"] = egress::to_json(spec.egress, true);
  return key.dump();
}

std::optional<BoxRecord> Engine::Impl::claim_pooled(const BoxSpec& spec) {
  if (opts.warm_pool.empty()) return std::nullopt;
  struct Notify {
    const std::function<void()>& f;
    ~Notify() {
      if (f) f();
    }
  } notify{pool_listener};  // a claim or a miss: the filler looks again
  BoxRecord as;
  as.name = spec.name;
  as.spec = spec;
  as.state_reason = "created (from the warm pool)";
  std::optional<std::string> id = store.claim_pooled(pool_key(spec), as);
  if (!id) return std::nullopt;
  debug_log("warm pool claimed");
  BoxRecord b = *store.find_id(*id);
  try {
    // No lock needed: the box is ours alone since the claim, and the pool can no longer retire
    // it. The init rewrites its files while we set the kernel's hostname.
    if (!process_matches(b.init_pid, b.init_start)) throw Error(Errc::internal, "its init is gone");
    UniqueFd c = connect(b);
    ipc::send(c.get(), {{"op", "rename"}, {"hostname", b.name}});
    set_box_hostname(b.init_pid, b.name);
    debug_log("warm pool hostname set");
    auto reply = ipc::recv_wait(c.get(), 10000);
    if (!reply || !reply->body.value("ok", false))
      throw Error(Errc::internal,
                  reply ? reply->body.value("error", std::string("rename failed")) : "no answer");
    debug_log("warm pool box renamed");
  } catch (const Error& e) {
    // Not usable: it goes, and the create makes a new box instead.
    debug_log("pooled box " + b.id + " could not be handed out: " + e.what());
    try {
      auto lock = lock_box(b.id);
      store.set_state(b.id, box_state::removing, "warm pool hand-out failed");
      if (b.init_pid) stop_init(b, 0);
      cleanup_failed_create(b.id);
    } catch (const Error&) {
    }
    return std::nullopt;
  }
  return b;
}

BoxSpec Engine::Impl::shape_spec(const PoolShape& shape) {
  BoxSpec spec;
  spec.image = shape.image;
  spec.limits = shape.limits;
  validate_box_spec(spec);
  prepare_image(spec);
  apply_default_limits(spec);
  return spec;
}

void Engine::Impl::remove_pooled(const BoxRecord& b, const std::string& reason) {
  if (!store.retire_pooled(b.id, reason)) return;  // handed out meanwhile
  store.set_owner(b.id, ::getpid(), process_start_time(::getpid()).value_or(0));
  auto lock = lock_box(b.id);
  if (b.init_pid) stop_init(b, 0);
  cleanup_failed_create(b.id);
}

void Engine::on_pool_claim(std::function<void()> f) {
  std::lock_guard g(impl_->mu);
  impl_->pool_listener = std::move(f);
}

std::vector<Engine::PoolState> Engine::pool_status() {
  Impl& I = *impl_;
  std::lock_guard g(I.mu);
  std::map<std::string, size_t> ready;
  store::BoxFilter f;
  f.pooled = store::BoxFilter::Pooled::only;
  for (const auto& b : I.store.list(f))
    if (b.state == box_state::running) ready[b.pool]++;
  std::vector<PoolState> out;
  for (const auto& shape : opts_.warm_pool) {
    PoolState s;
    s.shape = shape;
    try {
      s.key = I.pool_key(I.shape_spec(shape));
      s.ready = ready[s.key];
    } catch (const Error& e) {
      s.error = e.what();
    }
    out.push_back(s);
  }
  return out;
}

std::vector<std::string> Engine::fill_pool() {
  Impl& I = *impl_;
  std::vector<std::string> done;
  auto lock = FileLock::try_lock(I.layout.lock("warm-pool"));
  if (!lock) return done;  // another process is filling it
  std::vector<PoolState> shapes = pool_status();
  std::map<std::string, size_t> wanted;
  for (const auto& s : shapes)
    if (s.error.empty()) wanted[s.key] += s.shape.size;
  // Dead, surplus and unconfigured pooled boxes go first.
  std::vector<BoxRecord> pooled;
  {
    std::lock_guard g(I.mu);
    store::BoxFilter f;
    f.pooled = store::BoxFilter::Pooled::only;
    for (const auto& b : I.store.list(f)) pooled.push_back(I.check_alive(b));
  }
  std::map<std::string, size_t> kept;
  for (const auto& b : pooled) {
    std::string why;
    if (b.state != box_state::running && b.state != box_state::creating)
      why = "its init is gone";
    else if (!wanted.count(b.pool))
      why = "its shape is no longer configured";
    else if (++kept[b.pool] > wanted[b.pool])
      why = "the pool is smaller now";
    if (why.empty()) continue;
    try {
      std::lock_guard g(I.mu);
      I.remove_pooled(b, "warm pool: " + why);
      done.push_back("removed pooled box " + b.id + ": " + why);
    } catch (const Error& e) {
      done.push_back("could not remove pooled box " + b.id + ": " + e.what());
    }
  }
  for (const auto& s : shapes) {
    if (!s.error.empty()) {
      done.push_back("cannot fill shape " + s.key + ": " + s.error);
      continue;
    }
    size_t have = std::min(kept[s.key], wanted[s.key]);
    for (; have < wanted[s.key]; have++) {
      try {
        std::unique_lock g(I.mu);
        BoxRecord b = I.create_new(I.shape_spec(s.shape), g, s.key);
        done.push_back("created pooled box " + b.id + " for " + s.key);
      } catch (const Error& e) {
        done.push_back("cannot fill shape " + s.key + ": " + e.what());
        break;
      }
    }
    kept[s.key] = have;
  }
  return done;
}

size_t Engine::drain_pool() {
  Impl& I = *impl_;
  FileLock lock(I.layout.lock("warm-pool"), 60000);
  std::lock_guard g(I.mu);
  store::BoxFilter f;
  f.pooled = store::BoxFilter::Pooled::only;
  size_t n = 0;
  for (const auto& b : I.store.list(f)) {
    if (b.state == box_state::creating) continue;  // reconciliation removes an abandoned one
    I.remove_pooled(b, "warm pool drained");
    n++;
  }
  return n;
}

}  // namespace upstream
