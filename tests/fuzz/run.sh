#!/usr/bin/env bash
# The fuzz targets (libFuzzer with ASan and UBSan, built with clang) in two modes:
#
#   tests/fuzz/run.sh check [BUILD_DIR]
#       What `make test` runs: every target for a fixed number of inputs from a fixed seed over
#       the checked-in seeds, so the same commit gives the same verdict on any machine, however
#       fast. UPSTREAM_FUZZ_RUNS overrides each target's count.
#   tests/fuzz/run.sh fuzz [SECONDS] [BUILD_DIR]
#       What `make fuzz` runs: every target (or those named in FUZZ_TARGETS) for SECONDS each
#       (default 300), from a random seed, keeping the corpus it grows in BUILD_DIR between
#       runs. A crash is written straight into tests/fuzz/regressions/TARGET/, where the unit
#       tests replay it from then on; fix the code, then commit the file.
set -euo pipefail
cd "$(dirname "$0")/../.."
mode=${1:-check}
case "$mode" in
  check) out=${2:-build-fuzz} ;;
  fuzz) seconds=${2:-${FUZZ_SECONDS:-300}} out=${3:-build-fuzz} ;;
  *) echo "usage: tests/fuzz/run.sh check [BUILD_DIR] | fuzz [SECONDS] [BUILD_DIR]" >&2; exit 2 ;;
esac
if [ "$mode" = fuzz ] && ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
  echo "fuzz: SECONDS must be a whole number of seconds, not '$seconds'" >&2
  exit 2
fi

# Each target: the sources it is built from, the seed folders it starts from, and the number of
# inputs `make test` runs (sized to take well under a minute here).
declare -A sources seeds runs defines
targets=(document dns peek http_head frame export)
main=tests/fuzz/fuzz_main.cc
common_src="src/common/strings.cc src/common/error.cc src/common/time.cc src/common/fd.cc src/common/utf8.cc"
sources[document]="tests/fuzz/document_check.cc src/pipeline/document.cc src/model/egress.cc
  src/model/box.cc src/model/fields.cc $common_src
  /usr/lib/x86_64-linux-gnu/libcmark.a /usr/lib/x86_64-linux-gnu/libyaml-cpp.a"
seeds[document]="tests/golden examples"
runs[document]=120000
# netd's parsers of box-controlled bytes (netd runs as host root)
net_src="tests/fuzz/net_check.cc src/netd/dns.cc src/netd/sniff.cc src/netd/http_relay.cc
  src/model/egress.cc src/model/box.cc src/model/fields.cc $common_src"
for t in dns peek http_head; do
  sources[$t]=$net_src
  seeds[$t]="tests/fuzz/seeds/$t"
done
runs[dns]=1000000
runs[peek]=1000000
runs[http_head]=1000000
# the engine's readers of the in-box file worker's frames and of users' snapshot exports
sources[frame]="tests/fuzz/frame_check.cc src/common/frame.cc $common_src"
seeds[frame]="tests/fuzz/seeds/frame"
runs[frame]=300000
sources[export]="tests/fuzz/export_check.cc src/storage/export_format.cc src/common/digest.cc
  $common_src -larchive -lcrypto"
seeds[export]="tests/fuzz/seeds/export"
runs[export]=300000

flags=(-std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
  -Isrc -Itests)

build_target() {  # builds $out/$1/fuzz when a source or header is newer than it
  local t=$1 bin="$out/$1/fuzz"
  mkdir -p "$out/$t"
  if [ ! -x "$bin" ] || [ -n "$(find src tests/fuzz \( -name '*.cc' -o -name '*.h' \) -newer "$bin" -print -quit)" ]; then
    # shellcheck disable=SC2086
    clang++ "${flags[@]}" -DUPSTREAM_FUZZ_CHECK="check_$t" "$main" ${sources[$t]} -o "$bin"
  fi
}

status=0
for t in "${targets[@]}"; do
  if [ -n "${FUZZ_TARGETS:-}" ] && [[ " $FUZZ_TARGETS " != *" $t "* ]]; then continue; fi
  build_target "$t"
  regressions="tests/fuzz/regressions/$t"
  mkdir -p "$regressions"
  seed_dirs=()
  for d in ${seeds[$t]} "$regressions"; do seed_dirs+=("$d"); done
  common=(-max_len=8192 -timeout=25 -rss_limit_mb=2048 -reload=0 -print_final_stats=1)
  if [ "$mode" = check ]; then
    # A fresh corpus each time: what an earlier run added must not change this run's inputs.
    rm -rf "$out/$t/check-corpus" && mkdir -p "$out/$t/check-corpus"
    n=${UPSTREAM_FUZZ_RUNS:-${runs[$t]}}
    printf 'fuzz %s: %s inputs from seed 1\n' "$t" "$n"
    args=(-seed=1 -runs="$n" -artifact_prefix="$out/$t/" "$out/$t/check-corpus" "${seed_dirs[@]}")
  else
    mkdir -p "$out/$t/corpus"
    printf 'fuzz %s: %ss\n' "$t" "$seconds"
    args=(-max_total_time="$seconds" -artifact_prefix="$regressions/" "$out/$t/corpus" "${seed_dirs[@]}")
  fi
  # Without address randomisation: the parsers' coverage depends on pointer values here and there
  # (hash tables, sorting), and a fixed seed gives the same inputs only when it does not.
  norandom=()
  if [ "$mode" = check ] && setarch "$(uname -m)" -R true 2>/dev/null; then
    norandom=(setarch "$(uname -m)" -R)
  fi
  started=$(date +%s)
  if "${norandom[@]}" "$out/$t/fuzz" "${common[@]}" "${args[@]}" >"$out/$t/fuzz.log" 2>&1; then
    stats=$(grep -E '^stat::(number_of_executed_units|new_units_added)' "$out/$t/fuzz.log" | tr '\n' ' ')
    printf 'fuzz %s: passed, %s(%ss)\n' "$t" "$stats" "$(($(date +%s) - started))"
  else
    status=1
    tail -n 30 "$out/$t/fuzz.log"
    if [ "$mode" = check ]; then
      echo "fuzz $t: failed; the input is in $out/$t/ (crash-*, leak-*, timeout-*): add it to" \
        "$regressions/, fix the code, and the unit tests keep checking it" >&2
    else
      echo "fuzz $t: failed; the input was written to $regressions/ (replayed by the unit tests)" >&2
    fi
  fi
done
exit $status
