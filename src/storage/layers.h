// The layer store: the read-only layers snapshots are made of.
//
// A layer is what one box changed: the upper directories of its overlays, one subdirectory per
// overlay (`root/`, `usr/`, `etc/`, ...), as overlay wrote them (whiteouts, opaque directories,
// box-relative owners). It lives at <pool>/layers/<digest>, where the digest is the SHA-256 of
// a canonical walk of the tree (names, types, modes, owners, times, extended attributes and
// contents): the same changes are stored once, whichever snapshots list them. A box made from a
// snapshot mounts its layers, read-only, below a fresh upper directory of its own; nothing is
// copied per box.
//
// Layers are staged in `.staging-<pid>-<start>-<rand>` directories (removable once their owner
// process is gone), synced, then renamed into place: a layer directory under its digest is
// always complete.
#pragma once

#include "common/digest.h"  // is_digest

#include <archive.h>

#include <cstdint>
#include <string>
#include <vector>

#include "storage/pool.h"

namespace upstream::storage {

struct LayerInfo {
  std::string digest;  // 64 hex
  uint64_t bytes = 0;  // sum of the sizes of its regular files
  uint64_t files = 0;  // entries
};

// The canonical digest of a directory tree (not following symlinks or crossing mounts).
LayerInfo digest_tree(const std::string& dir);

class LayerStore {
 public:
  explicit LayerStore(const Pool& pool);

  std::string path(const std::string& digest) const { return root_ + "/" + digest; }
  bool exists(const std::string& digest) const;
  std::vector<std::string> list() const;  // digests on disk

  // A new, empty staging directory owned by this process.
  std::string new_staging() const;
  // A staging directory holding the changes of a box volume: its overlays' upper directories
  // moved to the top (`fs/root/upper` becomes `root/`), work directories dropped, and the box's
  // own identity files (`drop`, relative to the staging directory) removed. The box must be
  // frozen or stopped for the duration of this call only.
  std::string stage_volume(const std::string& box_id, const std::vector<std::string>& drop) const;
  // Digests a staging directory and moves it into place, synced, unless an identical layer is
  // there already (then the staging copy is removed). If `expect` is set, a different digest is
  // an error (the staging directory is removed).
  LayerInfo commit(const std::string& staging, const std::string& expect = "") const;
  void remove(const std::string& digest) const;
  void discard(const std::string& staging) const { pool_.remove_tree_at(staging); }
  // Removes staging directories whose owner process is gone.
  void remove_stale_staging() const;

 private:
  const Pool& pool_;
  std::string root_;
};

// Writes a layer's tree into an archive under `prefix` (e.g. "layers/<digest>/").
void write_layer_tar(archive* a, const std::string& dir, const std::string& prefix);

}  // namespace upstream::storage
