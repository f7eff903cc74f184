#!/usr/bin/env bash
# Durable boxes in one run on this machine: snapshot time against the size of the changes (10 MB,
# 100 MB, 1 GB), fan-out of 100 boxes from one snapshot (and 100 plain boxes, and a fork),
# pause and resume latency, host memory per paused box, against a cold create + first exec.
#   bench/durable.sh [BUILD_DIR] [durable_bench options...]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
shift || true
out="bench/results-$(date -u +%Y-%m-%d)-durable.json"
"$build/bench/durable_bench" --out "$out" "$@"
echo "results written to $out"
