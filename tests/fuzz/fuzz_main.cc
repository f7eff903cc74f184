// The libFuzzer entry point of every fuzz target: built once per target with
// -DUPSTREAM_FUZZ_CHECK=check_<target> (see tests/fuzz/run.sh); the properties are in the
// target's *_check.cc, which the unit tests also replay over tests/fuzz/regressions/.
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "check.h"

#ifndef UPSTREAM_FUZZ_CHECK
#error "build with -DUPSTREAM_FUZZ_CHECK=check_<target>"
#endif

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    upstream::fuzz::UPSTREAM_FUZZ_CHECK({reinterpret_cast<const char*>(data), size});
  } catch (const upstream::fuzz::Finding& f) {
    std::fprintf(stderr, "fuzz finding: %s\n", f.what());
    std::abort();
  }
  return 0;
}
