#include <unistd.h>

#include <climits>
#include <cstdlib>

#include "common/error.h"
#include "common/strings.h"
#include "engine/engine.h"

namespace upstream {

EngineOptions EngineOptions::from_environment() {
  EngineOptions o;
  auto env = [](const char* name) -> std::string {
    const char* v = std::getenv(name);
    return v ? v : "";
  };
  o.home = env("UPSTREAM_HOME");
  if (o.home.empty()) {
    if (::geteuid() == 0) {
      o.home = "/var/lib/upstream";
    } else if (!env("XDG_DATA_HOME").empty()) {
      o.home = env("XDG_DATA_HOME") + "/upstream";
    } else {
      o.home = env("HOME") + "/.local/share/upstream";
    }
  }
  if (o.home.empty() || o.home[0] != '/') throw_invalid("UPSTREAM_HOME must be an absolute path");
  // Symlinks in the state directory's own path would trip the symlink checks of extraction.
  if (char* real = ::realpath(o.home.c_str(), nullptr)) {
    o.home = real;
    std::free(real);
  }
  o.init_path = env("UPSTREAM_INIT");
  if (!env("UPSTREAM_STORAGE").empty()) o.storage = env("UPSTREAM_STORAGE");
  if (!env("UPSTREAM_POOL_SIZE").empty())
    o.pool_size = parse_size(env("UPSTREAM_POOL_SIZE"), "UPSTREAM_POOL_SIZE");
  if (!env("UPSTREAM_SLOTS_DIR").empty()) o.slots_dir = env("UPSTREAM_SLOTS_DIR");
  // Defaults a box gets unless it asks for something else: enough for real work, bounded so
  // that one box cannot take the host down.
  o.default_limits.memory = 2ull << 30;
  o.default_limits.pids = 4096;
  o.default_limits.disk = 10ull << 30;
  if (!env("UPSTREAM_DEFAULT_MEMORY").empty())
    o.default_limits.memory = parse_size(env("UPSTREAM_DEFAULT_MEMORY"), "UPSTREAM_DEFAULT_MEMORY");
  if (!env("UPSTREAM_DEFAULT_DISK").empty())
    o.default_limits.disk = parse_size(env("UPSTREAM_DEFAULT_DISK"), "UPSTREAM_DEFAULT_DISK");
  return o;
}

}  // namespace upstream
