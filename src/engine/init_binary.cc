// The box init travels inside the main binary (see CMakeLists.txt); it is written once per
// version to the state directory and executed from there.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>

#include "common/error.h"
#include "common/fd.h"
#include "engine/impl.h"
#include "storage/layout.h"

extern "C" {
extern const char upstream_init_blob_start[];
extern const char upstream_init_blob_end[];
extern const char upstream_init_blob_hash[];
}

namespace upstream {

std::string materialize_init(const std::string& bin_dir) {
  std::string hash = std::string(upstream_init_blob_hash).substr(0, 16);
  std::string path = bin_dir + "/upstream-init-" + hash;
  struct stat st;
  size_t size = static_cast<size_t>(upstream_init_blob_end - upstream_init_blob_start);
  if (::stat(path.c_str(), &st) == 0 && static_cast<size_t>(st.st_size) == size) return path;
  make_dirs(bin_dir, 0755);
  write_file_atomic(path, std::string(upstream_init_blob_start, size), 0755);
  return path;
}

}  // namespace upstream
