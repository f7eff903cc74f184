// Resolving "root", "user", a name, "uid" or "uid:gid" against the box's own /etc/passwd and
// /etc/group. Runs inside the box, so it reads the box's files, not the host's.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace upstream::init {

struct Identity {
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;
  std::string name;
  std::string home;
  std::string shell;
};

// Throws Error(invalid_argument) for an unknown name or an out-of-range id.
Identity resolve_user(const std::string& spec, uint32_t uid_count, const std::string& passwd_text,
                      const std::string& group_text);

}  // namespace upstream::init
