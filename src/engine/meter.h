// Metering (usage.cc): what a box or snapshot used since its metered mark (CPU from its cgroup,
// disk from its volume and archive, time running from its history), and recording it, which
// moves the mark. The caller serialises calls with the store's other users (the engine's
// mutex) and holds the box's lock when it records a box.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>

#include "model/box.h"
#include "runtime/cgroup.h"
#include "storage/pool.h"
#include "store/box_store.h"

namespace upstream {

class UsageMeter {
 public:
  // group: the cgroup group the installation's boxes are in (read at each use: it is named
  // once the installation's instance is known).
  UsageMeter(store::BoxStore& store, const storage::Pool& pool,
             const runtime::CgroupSystem& cgroups, const std::string& group);

  // What it used since its mark, up to `now` (nullopt: nothing); the second member is the box's
  // CPU counter at `now`.
  std::optional<std::pair<UsageRow, uint64_t>> box_since_mark(const BoxRecord& b, int64_t now);
  std::optional<UsageRow> snapshot_since_mark(const SnapshotRecord& s, int64_t now);
  void record_box(const BoxRecord& b);
  void record_snapshot(const SnapshotRecord& s);

 private:
  store::BoxStore& store_;
  const storage::Pool& pool_;
  const runtime::CgroupSystem& cgroups_;
  const std::string& group_;
};

}  // namespace upstream
