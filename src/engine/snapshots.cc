// Snapshots: capture, fan-out, export and import, and the garbage collection of layers.
#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>

#include "common/error.h"
#include "common/fd.h"
#include "common/proc.h"
#include "common/strings.h"
#include "common/time.h"
#include "engine/impl.h"
#include "storage/export_format.h"

namespace upstream {

using nlohmann::json;

void crash_point(const char* name) {
  const char* at = std::getenv("UPSTREAM_CRASH_AT");
  if (at && std::strcmp(at, name) == 0) ::raise(SIGKILL);
}

namespace {

using storage::kMaxLayers;
constexpr const char* kManifest = storage::kExportManifest;
constexpr int kFormatVersion = storage::kExportVersion;

// What an export carries of a snapshot's configuration: what a box made from it takes (never its
// network policy, whose header values are secrets of this installation).
json export_config(const BoxSpec& s) {
  json full = spec_to_json(s, Secrets::names);
  json out = json::object();
  for (const char* k : {"env", "limits", "user", "workdir"}) out[k] = full[k];
  return out;
}

BoxSpec import_config(const json& j) {
  json picked = json::object();
  if (!j.is_object()) throw_invalid("not a valid snapshot export: its configuration is no object");
  for (const char* k : {"env", "limits", "user", "workdir"})
    if (j.contains(k)) picked[k] = j[k];
  return spec_from_json(picked, "config");
}

void check_snapshot_name(const std::string& name) {
  if (name == "host" || !valid_box_name(name))
    throw_invalid("invalid snapshot name '" + name +
                  "': use up to 63 letters, digits, '_', '.' or '-', starting with a letter or "
                  "digit (and not 'host')");
}

// The box's own identity files, which every box writes for itself at start.
std::vector<std::string> identity_files(const storage::ImagePlan& plan) {
  std::string etc = plan.etc_upper;  // "etc/upper" or "root/upper/etc"
  auto pos = etc.find("/upper");
  if (pos != std::string::npos) etc.erase(pos, 6);
  return {etc + "/hostname", etc + "/hosts", etc + "/machine-id"};
}

struct ArchiveFree {
  void operator()(archive* a) const { archive_free(a); }
};
using ArchivePtr = std::unique_ptr<archive, ArchiveFree>;

}  // namespace

// ---------------------------------------------------------------------------------------------

SnapshotRecord Engine::snapshot_box(const std::string& box_ref, const SnapshotOptions& opts) {
  Impl& I = *impl_;
  SnapshotRecord r;
  r.id = random_hex(12);
  r.name = opts.name.empty() ? "snap-" + r.id.substr(0, 8) : opts.name;
  r.kind = opts.kind;
  r.labels = opts.labels;
  r.ephemeral = opts.ephemeral;
  check_snapshot_name(r.name);
  for (const auto& [k, v] : r.labels) parse_label(k + "=" + v);

  std::string staging;
  {
    std::lock_guard g(I.mu);
    auto held = I.hold_box(box_ref);
    BoxRecord& b = held.box;
    if (I.store.snapshot_name_taken(r.name))
      throw Error(Errc::already_exists,
                  "a snapshot or image named '" + r.name + "' already exists");
    if (b.state == box_state::archived) b = I.unarchive(b, "unarchived for a snapshot");
    if (b.state != box_state::running && b.state != box_state::paused &&
        b.state != box_state::stopped)
      throw Error(Errc::failed_precondition,
                  "box " + b.name + " is " + b.state + "; it cannot be snapshotted now");
    storage::ImagePlan plan = I.plan(b);
    storage::ImageRef ref = storage::parse_image(b.spec.image);
    r.source_box = b.id;
    r.base_image = b.spec.image;
    // A snapshot of a tenant's box is the tenant's, whatever labels were asked for (the
    // operator may label a snapshot of its own for a tenant: a grant).
    if (std::string t = tenant_of(b.spec.labels); !t.empty()) r.labels[kTenantLabel] = t;
    std::vector<std::string> parent_layers;
    if (ref.kind == "snapshot") {
      SnapshotRecord parent = I.store.resolve_snapshot(ref.path);
      r.parent = parent.id;
      r.base_image = parent.base_image;
      parent_layers = parent.layers;
      if (parent_layers.size() + 1 > kMaxLayers)
        throw Error(Errc::failed_precondition,
                    "box " + b.name + " is " + std::to_string(parent_layers.size()) +
                        " snapshots deep; at most " + std::to_string(kMaxLayers) +
                        " layers can be stacked");
    }
    r.config.env = b.spec.env;
    r.config.limits = b.spec.limits;
    r.config.user = b.spec.user;
    r.config.workdir = b.spec.workdir;
    r.config.image = r.base_image;

    // Consistent capture: a running box is frozen while its volume is copied (a btrfs snapshot
    // takes milliseconds; the kernel writes the box's dirty data out first).
    runtime::BoxCgroup cg = I.cgroup(b.id);
    bool froze = false;
    {
      // Most of what the box wrote goes to disk while it still runs, so that the flush inside
      // the frozen window is short.
      UniqueFd vol(::open(I.volume(b.id).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
      if (vol) ::syncfs(vol.get());
    }
    int64_t freeze_start = mono_us();
    if (b.state == box_state::running) {
      if (!cg.set_frozen(true, 5000)) {
        cg.set_frozen(false, 1000);
        throw Error(Errc::internal, "box " + b.name + " could not be frozen for the snapshot");
      }
      froze = true;
    }
    try {
      staging = I.layers->stage_volume(b.id, identity_files(plan));
    } catch (...) {
      if (froze) cg.set_frozen(false, 5000);
      throw;
    }
    if (froze) cg.set_frozen(false, 5000);
    r.frozen_us = froze ? mono_us() - freeze_start : 0;
    r.layers = parent_layers;
  }
  crash_point("snapshot-staged");

  // Hashing and storing run while the box goes on.
  // The layers lock is held from storing the layer to recording it, so that garbage
  // collection never sees the layer unlisted. Lock order: layers, then the engine's mutex.
  std::optional<FileLock> layers_lock;
  layers_lock.emplace(I.layout.lock("layers"), 120'000);
  storage::LayerInfo info = I.layers->commit(staging);
  crash_point("snapshot-committed");
  r.layers.insert(r.layers.begin(), info.digest);
  r.bytes = info.bytes;
  r.created_at = now_ms();
  std::lock_guard g(I.mu);
  r.total_bytes = r.bytes;
  for (size_t i = 1; i < r.layers.size(); i++)
    if (auto l = I.store.find_layer(r.layers[i])) r.total_bytes += l->bytes;
  try {
    I.store.insert_snapshot(r, {{info.digest, info.bytes, info.files}});
  } catch (...) {
    // A name taken meanwhile: the layer goes unless another snapshot lists it.
    layers_lock.reset();
    I.gc_layers();
    throw;
  }
  SnapshotRecord out = *I.store.find_snapshot(r.id);
  out.frozen_us = r.frozen_us;
  return out;
}

SnapshotRecord Engine::get_snapshot(const std::string& ref) {
  std::lock_guard g(impl_->mu);
  return impl_->store.resolve_snapshot(ref);
}

std::vector<SnapshotRecord> Engine::list_snapshots(const std::string& kind) {
  std::lock_guard g(impl_->mu);
  return impl_->store.list_snapshots(kind);
}

void Engine::Impl::remove_snapshot_locked(const SnapshotRecord& s) {
  auto users = store.boxes_using(s.name);
  if (!users.empty()) {
    std::vector<std::string> names;
    for (const auto& id : users)
      if (auto b = store.find_id(id)) names.push_back(b->name);
    throw Error(Errc::failed_precondition, (s.kind == "image" ? "image " : "snapshot ") + s.name +
                                               " is used by " + std::to_string(users.size()) +
                                               (users.size() == 1 ? " box" : " boxes") + " (" +
                                               join(names, ", ") + "); remove them first");
  }
  meter.record_snapshot(s);  // its last interval, kept after it is gone
  store.delete_snapshot(s.id);
  gc_layers();
}

void Engine::remove_snapshot(const std::string& ref) {
  Impl& I = *impl_;
  std::lock_guard g(I.mu);
  SnapshotRecord s = I.store.resolve_snapshot(ref);
  // Boxes waiting in the warm pool do not keep an image alive; they go with it (and the pool
  // reports the shape as unfillable).
  store::BoxFilter f;
  f.pooled = store::BoxFilter::Pooled::only;
  for (const auto& b : I.store.list(f))
    if (b.spec.image == s.name && b.state != box_state::creating)
      I.remove_pooled(b, "warm pool: its image " + s.name + " was removed");
  I.remove_snapshot_locked(s);
}

void Engine::Impl::gc_layers() {
  // Skipped while another snapshot or import is storing layers; a later call collects them.
  auto lock = FileLock::try_lock(layout.lock("layers"));
  if (!lock) return;
  layers->remove_stale_staging();
  std::set<std::string> wanted = store.referenced_layers();
  for (const auto& d : layers->list())
    if (!wanted.count(d)) {
      store.delete_layer(d);
      layers->remove(d);
    }
}

// ---------------------------------------------------------------------------------------------

std::vector<BoxRecord> Engine::create_boxes(BoxSpec spec, size_t count) {
  if (count == 0 || count > 1000) throw_invalid("count must be between 1 and 1000");
  if (count == 1) return {create_box(spec)};
  validate_box_spec(spec);
  if (!spec.name.empty() && spec.name.size() + 5 > 63)
    throw_invalid("box name '" + spec.name + "' is too long to number " + std::to_string(count) +
                  " boxes");
  {
    // Every name is checked first, so that a taken one creates nothing.
    std::lock_guard g(impl_->mu);
    BoxSpec probe = spec;
    impl_->prepare_image(probe);
    impl_->apply_default_limits(probe);
    impl_->tenants.check_limits(tenant_of(probe.labels), probe, count);
    if (!spec.name.empty())
      for (size_t i = 1; i <= count; i++)
        if (impl_->store.name_taken(spec.name + "-" + std::to_string(i)))
          throw Error(Errc::already_exists,
                      "a box named '" + spec.name + "-" + std::to_string(i) + "' already exists");
  }
  // Created by several workers: most of a create (volume, cgroups, the init's mounts) runs
  // outside the engine's mutex.
  std::vector<std::optional<BoxRecord>> made(count);
  std::exception_ptr failure;
  std::mutex fm;
  std::atomic<size_t> next{0}, done{0};
  auto work = [&] {
    for (size_t i; (i = next.fetch_add(1)) < count;) {
      {
        std::lock_guard g(fm);
        if (failure) return;
      }
      BoxSpec s = spec;
      if (!spec.name.empty()) s.name = spec.name + "-" + std::to_string(i + 1);
      try {
        made[i] = create_box(s);
        // Half made, the other workers in the middle of theirs: the crash tests kill it here.
        if (++done == count / 2) crash_point("fan-out-half");
      } catch (...) {
        std::lock_guard g(fm);
        if (!failure) failure = std::current_exception();
        return;
      }
    }
  };
  size_t workers =
      std::min<size_t>(count, std::clamp<size_t>(std::thread::hardware_concurrency(), 1, 4));
  std::vector<std::thread> threads;
  for (size_t w = 1; w < workers; w++) threads.emplace_back(work);
  work();
  for (auto& t : threads) t.join();
  std::vector<BoxRecord> out;
  for (auto& m : made)
    if (m) out.push_back(*m);
  if (failure) {
    // All or nothing.
    for (const auto& b : out) {
      try {
        remove_box(b.id, true);
      } catch (...) {
      }
    }
    std::rethrow_exception(failure);
  }
  return out;
}

std::vector<BoxRecord> Engine::fork_box(const std::string& box_ref, size_t count,
                                        BoxSpec overrides) {
  if (count == 0 || count > 1000) throw_invalid("count must be between 1 and 1000");
  validate_box_spec(overrides);
  BoxRecord src = get_box(box_ref);
  SnapshotOptions o;
  o.name = "fork-" + src.name.substr(0, 40) + "-" + random_hex(6);
  o.labels = overrides.labels;
  o.ephemeral = true;
  SnapshotRecord snap = snapshot_box(src.id, o);
  overrides.image = snap.name;
  for (const auto& [k, v] : src.spec.labels) overrides.labels.emplace(k, v);
  try {
    return create_boxes(overrides, count);
  } catch (...) {
    try {
      remove_snapshot(snap.id);
    } catch (...) {
    }
    throw;
  }
}

// ---------------------------------------------------------------------------------------------

uint64_t Engine::export_snapshot(const std::string& ref, int out_fd) {
  Impl& I = *impl_;
  SnapshotRecord s = get_snapshot(ref);
  json layers = json::array();
  {
    std::lock_guard g(I.mu);
    for (const auto& d : s.layers) {
      auto l = I.store.find_layer(d);
      layers.push_back({{"digest", d}, {"bytes", l ? l->bytes : 0}, {"files", l ? l->files : 0}});
    }
  }
  json manifest = {{"format", "upstream-snapshot"},
                   {"version", kFormatVersion},
                   {"name", s.name},
                   {"kind", s.kind},
                   {"base_image", s.base_image},
                   {"config", export_config(s.config)},
                   {"layers", layers},
                   {"created_at", format_time(s.created_at)}};
  std::string text = manifest.dump(2) + "\n";

  ArchivePtr a(archive_write_new());
  archive_write_set_format_pax(a.get());  // full pax: times to the nanosecond
  if (archive_write_add_filter_zstd(a.get()) != ARCHIVE_OK)
    throw Error(Errc::internal, std::string("zstd: ") + archive_error_string(a.get()));
  archive_write_set_bytes_in_last_block(a.get(), 1);
  if (archive_write_open_fd(a.get(), out_fd) != ARCHIVE_OK)
    throw Error(Errc::internal, std::string("export: ") + archive_error_string(a.get()));
  std::unique_ptr<archive_entry, decltype(&archive_entry_free)> e(archive_entry_new(),
                                                                  archive_entry_free);
  archive_entry_set_pathname(e.get(), kManifest);
  archive_entry_set_filetype(e.get(), AE_IFREG);
  archive_entry_set_perm(e.get(), 0644);
  archive_entry_set_size(e.get(), static_cast<la_int64_t>(text.size()));
  archive_entry_set_mtime(e.get(), s.created_at / 1000, 0);
  if (archive_write_header(a.get(), e.get()) != ARCHIVE_OK ||
      archive_write_data(a.get(), text.data(), text.size()) < 0)
    throw Error(Errc::internal, std::string("export: ") + archive_error_string(a.get()));
  for (const auto& d : s.layers) {
    if (!I.layers->exists(d)) throw Error(Errc::internal, "layer " + d + " is missing");
    storage::write_layer_tar(a.get(), I.layers->path(d), "layers/" + d + "/");
  }
  if (archive_write_close(a.get()) != ARCHIVE_OK)
    throw Error(Errc::internal, std::string("export: ") + archive_error_string(a.get()));
  return static_cast<uint64_t>(archive_filter_bytes(a.get(), -1));
}

SnapshotRecord Engine::import_snapshot(int in_fd, const std::string& name,
                                       const std::map<std::string, std::string>& labels,
                                       const std::string& base_override) {
  Impl& I = *impl_;
  if (!name.empty()) check_snapshot_name(name);
  ArchivePtr a(archive_read_new());
  storage::support_export_formats(a.get());
  if (archive_read_open_fd(a.get(), in_fd, 1 << 16) != ARCHIVE_OK)
    throw_invalid(std::string("not a snapshot export: ") + archive_error_string(a.get()));
  auto bad = [&](const std::string& why) -> Error {
    return Error(Errc::invalid_argument, "not a valid snapshot export: " + why);
  };
  storage::ExportManifest m = storage::read_export_manifest(a.get());
  SnapshotRecord r;
  r.id = random_hex(12);
  std::vector<std::string> digests = m.digests;
  r.name = name.empty() ? m.name : name;
  r.kind = m.kind;
  r.base_image = m.base_image;
  r.config = import_config(m.version == 1 ? upgrade_spec_v1(m.config) : m.config);
  check_snapshot_name(r.name);
  if (!base_override.empty()) r.base_image = base_override;
  {
    std::lock_guard g(I.mu);
    I.tenants.check_import_base(tenant_of(labels), r.base_image);
  }
  storage::ImageRef base = storage::parse_image(r.base_image);
  if (base.kind == "snapshot") throw bad("bad base image '" + r.base_image + "'");
  r.layers = digests;
  r.labels = labels;
  {
    std::lock_guard g(I.mu);
    if (I.store.snapshot_name_taken(r.name))
      throw Error(Errc::already_exists, "a snapshot or image named '" + r.name +
                                            "' already exists (import it under another name)");
  }

  // Layers are unpacked into staging directories, checked against their digests, then stored.
  std::map<std::string, std::string> staging;
  auto discard_all = [&] {
    for (const auto& [d, p] : staging) I.layers->discard(p);
  };
  ArchivePtr w(archive_write_disk_new());
  archive_write_disk_set_options(w.get(), ARCHIVE_EXTRACT_OWNER | ARCHIVE_EXTRACT_PERM |
                                              ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_XATTR |
                                              ARCHIVE_EXTRACT_SECURE_NODOTDOT |
                                              ARCHIVE_EXTRACT_SECURE_SYMLINKS);
  storage::ExportEntries entries(digests);
  archive_entry* e;
  try {
    for (;;) {
      int rc = archive_read_next_header(a.get(), &e);
      if (rc == ARCHIVE_EOF) break;
      if (rc < ARCHIVE_WARN)
        throw bad(std::string("cannot read it: ") + archive_error_string(a.get()));
      std::string path = archive_entry_pathname(e) ? archive_entry_pathname(e) : "";
      auto entry = entries.next(e);
      if (!entry) continue;
      const std::string &digest = entry->digest, &rest = entry->rest;
      if (rest.empty()) {
        staging[digest] = I.layers->new_staging();
        continue;
      }
      archive_entry_set_pathname(e, (staging[digest] + "/" + rest).c_str());
      if (archive_write_header(w.get(), e) < ARCHIVE_WARN)
        throw Error(Errc::internal, "cannot unpack " + path + ": " + archive_error_string(w.get()));
      if (archive_entry_size(e) > 0) {
        const void* buf;
        size_t size;
        la_int64_t off;
        while ((rc = archive_read_data_block(a.get(), &buf, &size, &off)) == ARCHIVE_OK)
          if (archive_write_data_block(w.get(), buf, size, off) < ARCHIVE_WARN)
            throw Error(Errc::internal,
                        "cannot unpack " + path + ": " + archive_error_string(w.get()));
        if (rc != ARCHIVE_EOF)
          throw bad("truncated or damaged at " + path + ": " + archive_error_string(a.get()));
      }
      if (archive_write_finish_entry(w.get()) < ARCHIVE_WARN)
        throw Error(Errc::internal, "cannot unpack " + path + ": " + archive_error_string(w.get()));
    }
    archive_write_close(w.get());  // sets directory times and modes
    entries.finish();
  } catch (...) {
    discard_all();
    throw;
  }
  crash_point("import-staged");

  std::optional<FileLock> layers_lock;
  layers_lock.emplace(I.layout.lock("layers"), 120'000);
  std::vector<store::storage_layer> rows;
  try {
    // Checked before anything is stored: one corrupt layer stores none.
    std::map<std::string, storage::LayerInfo> infos;
    for (const auto& [d, p] : staging) {
      storage::LayerInfo info = storage::digest_tree(p);
      if (info.digest != d)
        throw bad("layer " + d + " is corrupt: its contents do not match its digest");
      infos[d] = info;
    }
    for (auto& [d, p] : staging) {
      I.layers->commit(p, d);
      p.clear();
      rows.push_back({d, infos[d].bytes, infos[d].files});
    }
  } catch (...) {
    for (const auto& [d, p] : staging)
      if (!p.empty()) I.layers->discard(p);
    layers_lock.reset();
    std::lock_guard g(I.mu);
    I.gc_layers();
    throw;
  }
  std::lock_guard g(I.mu);
  for (const auto& d : digests) {
    uint64_t bytes = 0;
    for (const auto& row : rows)
      if (row.digest == d) bytes = row.bytes;
    if (!bytes)
      if (auto l = I.store.find_layer(d)) bytes = l->bytes;
    if (d == digests.front()) r.bytes = bytes;
    r.total_bytes += bytes;
  }
  r.created_at = now_ms();
  try {
    I.store.insert_snapshot(r, rows);
  } catch (...) {
    layers_lock.reset();
    I.gc_layers();
    throw;
  }
  return *I.store.find_snapshot(r.id);
}

}  // namespace upstream
