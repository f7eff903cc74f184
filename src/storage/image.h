// Images: what a box's root filesystem is made of.
//   host       the host's system directories (see host_image.h)
//   dir:PATH   a root filesystem directory, used in place as the read-only lower layer
//   tar:PATH   a root filesystem tarball (plain or compressed), unpacked once into a cache keyed
//              by its content hash, then used like dir:
//   NAME       a snapshot or built image: its layers over its own base image (the engine
//              resolves the name; see layers.h)
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "common/init_protocol.h"
#include "storage/host_image.h"
#include "storage/layout.h"

namespace upstream::storage {

struct ImageRef {
  std::string kind;  // host | dir | tar | snapshot
  std::string path;  // absolute, for dir and tar; the name, for snapshot
  std::string spec() const {
    return kind == "host" ? "host" : kind == "snapshot" ? path : kind + ":" + path;
  }
};

// Parses and checks an image spec: the path must be absolute and exist with the right type.
// Throws invalid_argument / not_found naming what is wrong.
ImageRef parse_image(const std::string& spec);

struct ImagePlan {
  ImageRef ref;
  std::string rootfs_dir;       // dir/tar: the directory used as the lower layer
  std::string host_generation;  // host: the generation used
  std::vector<initproto::Overlay> overlays;
  std::string etc_upper;  // relative to the volume's fs dir: where new /etc files go
};

// Resolves an image to overlay layers, unpacking tarballs into the cache when needed.
ImagePlan plan_image(const ImageRef& ref, const Layout& layout, const HostImage* host);

// Unpacks a tarball into the image cache (if not already there) and returns the rootfs path.
std::string import_tarball(const std::string& tar_path, const Layout& layout);

// Creates the upper and work directories of every overlay in a fresh volume, the box's own
// /etc files, and the mount points a non-host image lacks.
void prepare_volume(const std::string& volume, const ImagePlan& plan, const std::string& hostname);

// For an existing volume at start: refreshes the per-box /etc files and creates any upper/work
// directory a newer image generation needs.
void refresh_volume(const std::string& volume, const ImagePlan& plan, const std::string& hostname);

}  // namespace upstream::storage
