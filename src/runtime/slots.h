// Host uid ranges for running boxes. Each running box gets its own 65536-id range, so no two
// boxes - even from different state directories - ever share a host uid. A range is held by an
// flock on a per-slot lock file; the box init inherits the lock, so the range is released
// exactly when the box's init exits, however it exits.
#pragma once

#include <cstdint>
#include <string>

#include "common/fd.h"

namespace upstream::runtime {

constexpr uint32_t kUidBase = 1u << 28;  // host uid of slot 0's box root: 268435456
constexpr uint32_t kIdsPerSlot = 65536;
constexpr uint32_t kMaxSlots = 60000;

inline uint32_t slot_uid_base(uint32_t slot) { return kUidBase + slot * kIdsPerSlot; }

struct SlotLease {
  uint32_t slot = 0;
  UniqueFd lock;  // keep open (and pass to the box init) to keep the slot
};

class SlotAllocator {
 public:
  explicit SlotAllocator(std::string dir);  // e.g. /run/upstream/slots
  SlotLease acquire();
  bool in_use(uint32_t slot) const;

 private:
  std::string dir_;
};

}  // namespace upstream::runtime
