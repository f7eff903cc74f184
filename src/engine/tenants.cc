// What a tenant may name and take. A tenant's box or snapshot carries kTenantLabel (set by the
// API for its keys, and by `upstream run` when the server runs a tenant's document), so every
// path that makes a box for a tenant - the API, documents, forks, imports - passes these checks
// in the engine, whichever front it came through.
#include <sys/statvfs.h>
#include <sys/sysinfo.h>
#include <unistd.h>

#include <algorithm>

#include "common/error.h"
#include "common/strings.h"
#include "engine/impl.h"
#include "engine/tenants.h"

namespace upstream {

namespace {

uint64_t host_memory() {
  struct sysinfo si {};
  if (::sysinfo(&si) != 0) return 0;
  return static_cast<uint64_t>(si.totalram) * si.mem_unit;
}

uint64_t host_cpus_milli() {
  long n = ::sysconf(_SC_NPROCESSORS_ONLN);
  return static_cast<uint64_t>(std::max(1L, n)) * 1000;
}

template <class T>
void fill(std::optional<T>& into, const std::optional<T>& from) {
  if (!into) into = from;
}

void fill(TenantRules& r, const TenantRules& from) {
  fill(r.images, from.images);
  fill(r.box_max.cpu_milli, from.box_max.cpu_milli);
  fill(r.box_max.memory, from.box_max.memory);
  fill(r.box_max.pids, from.box_max.pids);
  fill(r.box_max.disk, from.box_max.disk);
  fill(r.total_memory, from.total_memory);
  fill(r.total_disk, from.total_disk);
  fill(r.pool_reserve, from.pool_reserve);
}

std::string cpus_text(uint64_t milli) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", static_cast<double>(milli) / 1000.0);
  return buf;
}

}  // namespace

std::string tenant_of(const std::map<std::string, std::string>& labels) {
  auto it = labels.find(kTenantLabel);
  return it == labels.end() ? "" : it->second;
}

TenantPolicy::TenantPolicy(TenantRules all, std::map<std::string, TenantRules> each,
                           const storage::Pool& pool, store::BoxStore& store)
    : all_(std::move(all)), each_(std::move(each)), pool_(pool), store_(store) {}

TenantRules TenantPolicy::rules(const std::string& tenant) const {
  TenantRules r;
  if (auto it = each_.find(tenant); it != each_.end()) r = it->second;
  fill(r, all_);
  // The host's own defaults: one box may take half the host's memory and all its CPUs, one
  // tenant's boxes together its memory once and the pool but a reserve.
  uint64_t mem = host_memory(), pool_bytes = pool_.supports_limits() ? pool_.total_bytes() : 0;
  TenantRules host;
  host.images = std::vector<std::string>{"host"};
  host.box_max.cpu_milli = host_cpus_milli();
  if (mem) host.box_max.memory = mem / 2;
  host.box_max.pids = 32768;
  if (mem) host.total_memory = mem;
  if (pool_bytes) {
    host.pool_reserve = pool_bytes / 10;
    host.box_max.disk = pool_bytes - pool_bytes / 10;
    host.total_disk = pool_bytes - pool_bytes / 10;
  }
  fill(r, host);
  return r;
}

void TenantPolicy::check_image(const std::string& tenant, const std::string& image) {
  if (tenant.empty()) return;
  TenantRules r = rules(tenant);
  std::string name = image.empty() ? "host" : image;
  const auto& published = *r.images;
  if (std::find(published.begin(), published.end(), name) != published.end()) return;
  // A bare name is a snapshot or image: the tenant's own, or one the operator published by name
  // or id. Anything else (host, dir:, tar:) only if published as written.
  bool bare = name.find(':') == std::string::npos && name != "host";
  if (bare) {
    auto snap = store_.find_snapshot(name);
    if (snap && tenant_of(snap->labels) == tenant) return;
    if (snap && (std::find(published.begin(), published.end(), snap->name) != published.end() ||
                 std::find(published.begin(), published.end(), snap->id) != published.end()))
      return;
    // Another tenant's snapshot is as absent as one that does not exist.
    throw Error(Errc::not_found, "no such snapshot or image: " + name);
  }
  throw Error(Errc::permission_denied,
              "image '" + name + "' is not available to tenant " + tenant +
                  ": a tenant may use its own snapshots and images and those the operator "
                  "publishes (" +
                  (published.empty() ? std::string("none") : join(published, ", ")) + ")");
}

void TenantPolicy::check_limits(const std::string& tenant, const BoxSpec& spec, size_t adding,
                                const std::string& starting) {
  if (tenant.empty()) return;
  TenantRules r = rules(tenant);
  const Limits& l = spec.limits;
  const Limits& max = r.box_max;
  auto over = [&](const std::string& what, const std::string& asked, const std::string& ceiling) {
    throw Error(Errc::permission_denied, what + " " + asked + " is over tenant " + tenant +
                                             "'s ceiling of " + ceiling + " per box");
  };
  if (starting.empty()) {
    // Unset limits are unlimited, which no ceiling allows (but CPUs: unset is the host's, which
    // is what a box can take anyway).
    if (max.cpu_milli && l.cpu_milli && *l.cpu_milli > *max.cpu_milli)
      over("cpus", cpus_text(*l.cpu_milli), cpus_text(*max.cpu_milli));
    if (max.memory && (!l.memory || *l.memory > *max.memory))
      over("memory", l.memory ? format_bytes(*l.memory) : "unlimited", format_bytes(*max.memory));
    if (max.pids && (!l.pids || *l.pids > *max.pids))
      over("pids", l.pids ? std::to_string(*l.pids) : "unlimited", std::to_string(*max.pids));
    if (max.disk && pool_.supports_limits() && (!l.disk || *l.disk > *max.disk))
      over("disk", l.disk ? format_bytes(*l.disk) : "unlimited", format_bytes(*max.disk));
  }
  // Totals over the tenant's boxes: memory of those that run, disk of all.
  store::BoxFilter f;
  f.labels[kTenantLabel] = tenant;
  uint64_t memory = 0, disk = 0;
  for (const auto& b : store_.list(f)) {
    if (b.id == starting) continue;
    if (b.state != box_state::stopped && b.state != box_state::archived)
      memory += b.spec.limits.memory.value_or(0);
    disk += b.spec.limits.disk.value_or(0);
  }
  uint64_t add_memory = l.memory.value_or(0) * adding;
  uint64_t add_disk = starting.empty() ? l.disk.value_or(0) * adding : 0;
  if (r.total_memory && memory + add_memory > *r.total_memory)
    throw Error(Errc::resource_exhausted,
                "tenant " + tenant + "'s running boxes would have " +
                    format_bytes(memory + add_memory) + " of memory, over its ceiling of " +
                    format_bytes(*r.total_memory) + " (stop or remove a box first)");
  if (r.total_disk && pool_.supports_limits() && disk + add_disk > *r.total_disk)
    throw Error(Errc::resource_exhausted,
                "tenant " + tenant + "'s boxes would have " + format_bytes(disk + add_disk) +
                    " of disk, over its ceiling of " + format_bytes(*r.total_disk) +
                    " (remove a box first)");
  if (starting.empty() && r.pool_reserve && pool_.supports_limits()) {
    struct statvfs sv {};
    if (::statvfs(pool_.data_root().c_str(), &sv) == 0) {
      uint64_t free_bytes = static_cast<uint64_t>(sv.f_bavail) * sv.f_frsize;
      if (free_bytes < *r.pool_reserve)
        throw Error(Errc::resource_exhausted,
                    "the storage pool has " + format_bytes(free_bytes) +
                        " free, less than the reserve of " + format_bytes(*r.pool_reserve) +
                        " kept for the installation; no new box for tenant " + tenant);
    }
  }
}

void TenantPolicy::check_import_base(const std::string& tenant, const std::string& base) {
  if (!tenant.empty()) return check_image(tenant, base);
  // The operator's own import: an export names its base image as the exporting host knew it,
  // and a host path from another machine is nothing to trust by default.
  if (base == "host") return;
  TenantRules operator_rules = rules("");
  const auto& published = *operator_rules.images;
  if (std::find(published.begin(), published.end(), base) != published.end()) return;
  throw Error(Errc::permission_denied,
              "the export's base image is '" + base +
                  "', a path on the host it came from; import it with --base IMAGE to choose "
                  "its base here (--base " +
                  base + " to use that path)");
}

}  // namespace upstream
