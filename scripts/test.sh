#!/usr/bin/env bash
# Runs every test: formatting, unit tests (plain and under ASan+UBSan), integration tests with
# real boxes, and end-to-end tests that drive the CLI. Called by `make test` after the build.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
asan=${2:-build-asan}

if [ "$(id -u)" != 0 ]; then
  echo "test: boxes need root (namespaces, cgroups, mounts); run as root" >&2
  exit 1
fi

step() { printf '\n== %s\n' "$*"; }
started=$(date +%s)

step "format (clang-format)"
scripts/format.sh --check

step "layers (no include points up the order of docs/architecture.md)"
/usr/bin/python3 scripts/check_layers.py
/usr/bin/python3 -m pytest -q -p no:cacheprovider tests/layers

step "unit tests"
"$build/tests/upstream_unit_tests" --gtest_brief=1

step "unit tests under AddressSanitizer and UndefinedBehaviorSanitizer"
if [ ! -f "$asan/build.ninja" ]; then
  cmake -S . -B "$asan" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DUPSTREAM_SANITIZE=ON -DUPSTREAM_BENCH=OFF -DUPSTREAM_WERROR=ON >/dev/null
fi
cmake --build "$asan" --target upstream_unit_tests -j "$(nproc)"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  "$asan/tests/upstream_unit_tests" --gtest_brief=1

step "fuzz targets (libFuzzer: a fixed number of inputs from a fixed seed; make fuzz runs them long)"
tests/fuzz/run.sh check build-fuzz

step "integration tests (real boxes)"
"$build/tests/upstream_integration_tests" --gtest_brief=1

step "end-to-end tests (the CLI, as a user drives it)"
# Debian's Python, which has python3-pytest (another python3 may come first on PATH).
UPSTREAM_BIN="$PWD/$build/upstream" /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/e2e

step "security tests (what a tenant, a box, a web page and a second installation cannot do)"
UPSTREAM_BIN="$PWD/$build/upstream" /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/security

step "end-to-end tests again, with the CLI going over HTTP (UPSTREAM_URL set)"
UPSTREAM_E2E_REMOTE=1 UPSTREAM_BIN="$PWD/$build/upstream" /usr/bin/python3 -m pytest -q -p no:cacheprovider \
  tests/e2e/test_exec.py tests/e2e/test_boxes.py tests/e2e/test_cp.py tests/e2e/test_errors.py tests/e2e/test_cli.py \
  tests/e2e/test_pipeline.py tests/e2e/test_pause.py tests/e2e/test_snapshots.py tests/e2e/test_usage.py \
  tests/e2e/test_egress.py tests/e2e/test_expose.py tests/e2e/test_pipeline_network.py

printf '\nall tests passed in %ss\n' $(( $(date +%s) - started ))
