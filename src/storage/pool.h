// Box volumes: each box's writable layers (and its exec logs) live in one volume.
//
// The default pool is a btrfs filesystem in a sparse image file under the state directory,
// loop-mounted at <home>/pool. Each volume is a btrfs subvolume whose qgroup carries the box's
// disk limit, so a box that fills its disk gets EDQUOT while the host and other boxes are
// untouched. The image is sized to a share of the host's free space when it is made, which
// bounds what all boxes together can take from the host. Where btrfs is unavailable, a plain
// directory pool works without disk limits.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "storage/layout.h"

namespace upstream::storage {

enum class PoolKind { btrfs, plain };

struct PoolOptions {
  std::string kind = "auto";           // auto | btrfs | dir
  std::optional<uint64_t> size_bytes;  // btrfs image size; default 80% of free space
};

class Pool {
 public:
  // Opens the pool, creating and mounting it if needed.
  static Pool open(const Layout& layout, const PoolOptions& opts);

  PoolKind kind() const { return kind_; }
  bool supports_limits() const { return kind_ == PoolKind::btrfs; }
  std::string describe() const;
  const std::string& unavailable_reason() const { return why_plain_; }

  // The directory images are stored under (see Layout::data_root).
  std::string data_root() const;
  std::string volume_path(const std::string& id) const;
  bool volume_exists(const std::string& id) const;
  // A box volume, and nested in it a `logs` volume with a limit of its own: a box that fills its
  // disk can still start commands (and clean up), and runaway logs cannot fill its disk.
  void create_volume(const std::string& id, std::optional<uint64_t> limit_bytes,
                     std::optional<uint64_t> log_limit_bytes);
  void set_volume_limit(const std::string& id, std::optional<uint64_t> limit_bytes);
  void destroy_volume(const std::string& id);
  // Bytes the volume's data takes (btrfs qgroup "referenced"); nullopt if not measurable.
  std::optional<uint64_t> volume_usage(const std::string& id) const;
  std::vector<std::string> list_volumes() const;
  uint64_t total_bytes() const;
  // Directory of the layer store (next to the volumes, on the same filesystem).
  std::string layers_root() const { return data_root() + "/layers"; }
  // A writable copy of a volume's data at `dest` (a directory on the pool that does not exist
  // yet): a btrfs snapshot, sharing every extent; in a plain pool, a copy of fs/ (reflinked where
  // the filesystem can). Nested volumes (the logs) are not part of it.
  void copy_volume(const std::string& id, const std::string& dest) const;
  // An empty directory (a btrfs subvolume) at `dest`, and its removal.
  void make_tree(const std::string& dest) const;
  void remove_tree_at(const std::string& path) const;
  // A copy of the tree at `src` as `dest` (which must not exist), with owners, modes, times and
  // xattrs, sharing extents where the filesystem can (btrfs reflinks).
  void copy_tree(const std::string& src, const std::string& dest) const;
  // Makes a tree made by copy_volume/make_tree read-only where the pool can (btrfs).
  void seal_tree(const std::string& path) const;
  uint64_t free_bytes() const;

 private:
  Pool(PoolKind kind, std::string root) : kind_(kind), root_(std::move(root)) {}
  PoolKind kind_;
  std::string root_;  // directory holding the volumes
  std::string why_plain_;
};

}  // namespace upstream::storage
