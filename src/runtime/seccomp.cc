// The embedded, build-time compiled filter (see seccomp_compile.cc and CMakeLists.txt).
#include "runtime/seccomp.h"

extern "C" {
extern const char upstream_seccomp_blob_start[];
extern const char upstream_seccomp_blob_end[];
}

namespace upstream::runtime {

const std::string& default_seccomp_bpf() {
  static const std::string bpf(
      upstream_seccomp_blob_start,
      static_cast<size_t>(upstream_seccomp_blob_end - upstream_seccomp_blob_start));
  return bpf;
}

}  // namespace upstream::runtime
