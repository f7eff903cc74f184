#!/usr/bin/env bash
# Builds the document fuzz target with clang (libFuzzer, ASan, UBSan) and runs it for a bounded
# time, starting from the golden documents. Usage: tests/fuzz/run.sh [SECONDS] [BUILD_DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-60}
out=${2:-build-fuzz}
mkdir -p "$out/corpus"
flags=(-std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -Isrc)
bin="$out/document_fuzz"
srcs=(tests/fuzz/document_fuzz.cc src/pipeline/document.cc src/common/strings.cc src/common/error.cc src/common/time.cc)
if [ ! -x "$bin" ] || [ -n "$(find "${srcs[@]}" src/pipeline/document.h -newer "$bin" 2>/dev/null)" ]; then
  clang++ "${flags[@]}" "${srcs[@]}" -o "$bin" /usr/lib/x86_64-linux-gnu/libcmark.a /usr/lib/x86_64-linux-gnu/libyaml-cpp.a
fi
cp tests/golden/*.md "$out/corpus/"
# Crashes are written to $out/ (crash-*), so a failure leaves its input behind.
"$bin" -seed="${FUZZ_SEED:-1}" -max_total_time="$seconds" -max_len=8192 -timeout=10 -rss_limit_mb=2048 \
  -print_final_stats=1 -artifact_prefix="$out/" "$out/corpus" >"$out/fuzz.log" 2>&1 || {
  tail -n 40 "$out/fuzz.log"
  echo "fuzz: the failing input was saved in $out/ (crash-*)" >&2
  exit 1
}
grep -E '^stat::(number_of_executed_units|new_units_added)' "$out/fuzz.log"
