// Where things live under the state directory ($UPSTREAM_HOME).
#pragma once

#include <optional>
#include <string>

#include "common/fd.h"
#include "common/fs.h"

namespace upstream::storage {

struct Layout {
  explicit Layout(std::string home);

  std::string home;
  // Where image data lives: the storage pool's filesystem when there is one. Overlay refuses
  // layers nested in one another on one filesystem, and the state directory (by default
  // /var/lib/upstream) lies inside /var, itself a layer of the host image.
  std::string data_root;
  std::string db() const { return home + "/upstream.db"; }
  std::string pool_image() const { return home + "/pool.img"; }
  std::string pool_mount() const { return home + "/pool"; }
  std::string plain_volumes() const { return home + "/volumes"; }
  std::string run_dir() const { return home + "/run"; }
  std::string socket(const std::string& box) const { return run_dir() + "/" + box + ".sock"; }
  std::string locks_dir() const { return home + "/locks"; }
  std::string lock(const std::string& name) const { return locks_dir() + "/" + name + ".lock"; }
  std::string images_dir() const { return data_root + "/images"; }
  std::string host_image_dir() const { return images_dir() + "/host"; }
  std::string tar_images_dir() const { return images_dir() + "/tar"; }
  std::string bin_dir() const { return home + "/bin"; }
  std::string tmp_dir() const { return home + "/tmp"; }
};

}  // namespace upstream::storage
