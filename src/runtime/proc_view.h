// A box's own view of the host-wide files in /proc (memory, CPUs, uptime, CPU times, swap, disk
// statistics) and of /sys/devices/system/cpu/online, so that `free`, `nproc`-like readers and
// programs that size themselves by them see the box's limits, not the host's. The files come
// from LXCFS (Debian's lxcfs, a FUSE file system that answers each reader from its cgroups):
// one daemon for the host, mounted at /run/upstream/lxcfs, started by the first box that needs
// it and shared by every installation. The box's init binds its files over the box's own.
#pragma once

#include <string>
#include <vector>

namespace upstream::runtime {

// The directory LXCFS serves, once it does: started (or restarted, when a mount is left of one
// that died) as needed. "" when lxcfs is not installed or does not come up, and then boxes see
// the host's files, as they would without it; why is written to `why` when given.
std::string ensure_proc_view(std::string* why = nullptr);

// The files a box takes from it, relative to its directory and to the box's root.
const std::vector<std::string>& proc_view_files();

}  // namespace upstream::runtime
