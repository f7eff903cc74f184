// The `host` image: the host's own system directories as read-only lower layers, under a shared
// mask layer that removes what a box must not see.
//
// A generation of the image is a directory with
//   skel/         the box root: mount points, fresh /home/user, /root, /tmp, /srv, /mnt, and the
//                 host's top-level symlinks (bin -> usr/bin, ...)
//   mask/<dir>/   one layer per system directory, above the host's directory: a whiteout for
//                 every entry the host does not let all users read (shadow files, private keys,
//                 root-only directories, our own state), generated account files (host accounts
//                 below uid 1000 plus `user`, every password locked), and fresh /var/log and
//                 /var/tmp.
// The rule "a box sees no more of the host than an unprivileged local user could read" is what
// lets box root (which owns the host's root-owned files inside the box, so that it can install
// packages) be safe.
#pragma once

#include <cstdint>
#include <functional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "storage/layout.h"

namespace upstream::storage {

struct HostImage {
  std::string dir;                       // the generation directory
  std::string generation;                // its name
  std::vector<std::string> system_dirs;  // e.g. usr, etc, var, opt
  uint64_t masked = 0;                   // entries hidden by the mask
  int64_t built_at = 0;

  std::string skel() const { return dir + "/skel"; }
  std::string mask(const std::string& sysdir) const { return dir + "/mask/" + sysdir; }
};

struct HostImageOptions {
  std::string host_root = "/";      // tests point this at a fake host tree
  std::vector<std::string> hidden;  // absolute host paths always hidden (our state dir)
  int64_t max_age_ms = 24ll * 3600 * 1000;
  // Told before a generation is built (a few seconds), with why: "there is none yet", ...
  std::function<void(const std::string& why)> on_build;
};

// Returns the current generation, building a new one when there is none, the host's packages or
// /etc changed since, it is older than max_age_ms, or `rebuild` is set. Generations in
// `in_use` (held by running boxes) are never removed; older unused ones are.
HostImage ensure_host_image(const Layout& layout, const HostImageOptions& opts, bool rebuild,
                            const std::set<std::string>& in_use);

// Reads the current generation without building (nullopt if none).
std::optional<HostImage> current_host_image(const Layout& layout);

// The pieces of the mask, exposed for tests.
bool host_entry_hidden(unsigned mode, bool is_dir);
std::string filter_passwd(const std::string& text, const std::string& user_shell);
std::string filter_group(const std::string& text, const std::set<std::string>& kept_users);

}  // namespace upstream::storage
