// Build step: writes the compiled default seccomp filter to a file, to be embedded in upstream.
#include <cstdio>

#include "common/fd.h"
#include "runtime/seccomp.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: upstream-seccomp-gen OUTPUT\n");
    return 2;
  }
  upstream::write_file_atomic(argv[1], upstream::runtime::compile_default_seccomp(), 0644);
  return 0;
}
