// libFuzzer target for the document parser and the write-back; the properties are in
// document_check.cc (see tests/fuzz/run.sh).
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    upstream::fuzz::check_document({reinterpret_cast<const char*>(data), size});
  } catch (const upstream::fuzz::Finding& f) {
    std::fprintf(stderr, "fuzz finding: %s\n", f.what());
    std::abort();
  }
  return 0;
}
