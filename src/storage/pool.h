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
  uint64_t free_bytes() const;

 private:
  Pool(PoolKind kind, std::string root) : kind_(kind), root_(std::move(root)) {}
  PoolKind kind_;
  std::string root_;  // directory holding the volumes
  std::string why_plain_;
};

}  // namespace upstream::storage
