// The host side of copies between a box and the host: where a copy lands, and writing it without
// following anything the box controls (symlinks, "..") and without set-id bits. Shared by the
// engine's file sessions and by fronts that receive a box's files as tar (the CLI over HTTP).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

namespace upstream {

// Non-empty components, none "." or "..", not absolute.
bool plain_relative(const std::string& p);
// openat2 below dirfd with no symlinks followed; -1 with errno on failure.
int open_beneath(int dirfd, const std::string& rel, int flags, int mode = 0);

// Where a copy out of a box to `host_path` goes: into it when it is a directory (keeping the
// source's name), else to its parent under its name.
struct CopyOutPlan {
  std::string root_dir;  // the host directory entries are written below
  bool dest_is_dir = false;
  bool strip_first = false;  // a directory copied to a new name: its top entry is root_dir itself
  std::string file_name;     // a file copied to a new name
  bool src_is_dir = false;
  // The path below root_dir for an entry `rel` of the source (whose first component is the
  // source's own name); nullopt for the top entry when it is root_dir itself.
  std::optional<std::string> map(const std::string& rel) const;
};
// Checks the destination (creating host_path for a directory copied to a new name).
CopyOutPlan plan_copy_out(const std::string& host_path, bool src_is_dir);

// Where a copy of `host_path` into a box lands: `dir` (which must exist) and the name `top`.
struct CopyInPlan {
  std::string dir;
  std::string top;
};
// box_type(path) answers the type of a box path ("dir", "file"...) or nullopt if missing.
CopyInPlan plan_copy_in(
    const std::string& host_path, const std::string& box_dest,
    const std::function<std::optional<std::string>(const std::string&)>& box_type);

struct HostEntry {
  std::string type;  // file | dir | symlink (others are skipped)
  uint32_t mode = 0644;
  std::string target;  // symlinks
};
// Feeds a file's data to `sink`; called exactly once for a file entry, also when it cannot be
// written (the data must still be consumed).
using DataPump = std::function<void(const std::function<void(const char*, size_t)>& sink)>;
void write_host_entry(int root, const std::string& rel, const HostEntry& e, const DataPump& data);

// A host file or tree as a tar stream whose entries start with `top` (symlinks are stored, not
// followed; other special files are skipped).
void host_tree_to_tar(const std::string& host_path, const std::string& top, int out_fd);
// Unpacks a tar stream of a box's files (as the box's download_tar makes them) per plan.
void tar_to_host(int in_fd, const CopyOutPlan& plan);

}  // namespace upstream
