#!/usr/bin/env bash
# The HTTP API under load, in one run on this machine: exec of `true` over HTTP with many
# concurrent clients across 50 boxes (wrk, bounded in time), against two baselines measured in the
# same run: the same exec from one client at a time, and /healthz (the HTTP layer alone).
#   bench/http.sh [BUILD_DIR] [--boxes N] [--connections N] [--seconds S] [--out FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
shift || true
boxes=50 conns=50 secs=10 out=""
while (($#)); do
  case "$1" in
    --boxes) boxes=$2; shift 2 ;;
    --connections) conns=$2; shift 2 ;;
    --seconds) secs=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "http.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
command -v wrk >/dev/null || { echo "http.sh: wrk is missing (scripts/setup.sh installs it)" >&2; exit 1; }
up="$PWD/$build/upstream"
home=$(mktemp -d /tmp/upstream-bench-http-XXXXXX)
export UPSTREAM_HOME=$home
port=$((20000 + RANDOM % 20000))
url="http://127.0.0.1:$port"
server=""
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null || true
  for id in $("$up" box ls -q 2>/dev/null); do "$up" box rm -f "$id" >/dev/null 2>&1 || true; done
  umount -l "$home/pool" 2>/dev/null || true
  rm -rf "$home"
}
trap cleanup EXIT

"$up" serve --listen "127.0.0.1:$port" --no-access-log 2>"$home/serve.log" &
server=$!
for _ in $(seq 100); do curl -sf "$url/healthz" >/dev/null && break; sleep 0.1; done

echo "creating $boxes boxes..." >&2
ids=()
for i in $(seq "$boxes"); do
  ids+=("$(curl -sf -XPOST -H 'Content-Type: application/json' "$url/v1/boxes" -d '{}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')")
done
BOXES=$(IFS=,; echo "${ids[*]}")
export BOXES

# Warm up every box once.
for id in "${ids[@]}"; do curl -sf -XPOST -H 'Content-Type: application/json' "$url/v1/boxes/$id/execs" -d '{"cmd":["true"]}' >/dev/null; done

run() {  # connections threads seconds script/path
  local c=$1 t=$2 s=$3
  shift 3
  wrk -c "$c" -t "$t" -d "${s}s" --latency "$@" | tee "$home/wrk.out" >&2
}

echo "== ceiling: the host spawning /bin/true with one spawner per core, no sandbox" >&2
spawn_rate=$(python3 - "$secs" "$(nproc)" <<'PY'
import os, sys, time
secs, workers = float(sys.argv[1]), int(sys.argv[2])
def spawner(w):
    end, n = time.monotonic() + secs, 0
    while time.monotonic() < end:
        os.waitpid(os.posix_spawn("/bin/true", ["true"], {}), 0)
        n += 1
    os.write(w, f"{n}\n".encode())
    os._exit(0)
r, w = os.pipe()
kids = []
for _ in range(workers):
    pid = os.fork()
    if pid == 0:
        spawner(w)
    kids.append(pid)
os.close(w)
for k in kids:
    os.waitpid(k, 0)
total = sum(int(x) for x in os.read(r, 4096).split())
print(round(total / secs, 1))
PY
)
echo "host spawn rate: $spawn_rate/s" >&2

echo "== baseline: exec true over HTTP, one client" >&2
run 1 1 "$secs" -s bench/exec.lua "$url" >/dev/null
single=$(grep '^RESULT ' "$home/wrk.out" | sed 's/^RESULT //')

echo "== load: exec true over HTTP, $conns clients across $boxes boxes" >&2
run "$conns" 2 "$secs" -s bench/exec.lua "$url" >/dev/null
load=$(grep '^RESULT ' "$home/wrk.out" | sed 's/^RESULT //')

echo "== moderate load: exec true over HTTP, $(( $(nproc) * 2 )) clients" >&2
run "$(( $(nproc) * 2 ))" 2 "$secs" -s bench/exec.lua "$url" >/dev/null
moderate=$(grep '^RESULT ' "$home/wrk.out" | sed 's/^RESULT //')

echo "== baseline: GET /healthz (the HTTP layer alone), $conns clients" >&2
cat >"$home/health.lua" <<'LUA'
done = function(summary, latency, requests)
  io.write(string.format('RESULT {"requests":%d,"seconds":%.3f,"rps":%.1f,"p50_ms":%.3f,"p99_ms":%.3f}\n',
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
LUA
run "$conns" 2 "$(( secs < 5 ? secs : 5 ))" -s "$home/health.lua" "$url/healthz" >/dev/null
health=$(grep '^RESULT ' "$home/wrk.out" | sed 's/^RESULT //')

rss=$(awk '/VmHWM/ {print $2}' "/proc/$server/status")
result=$(python3 - "$single" "$load" "$health" "$boxes" "$conns" "$rss" "$moderate" "$spawn_rate" <<'PY'
import json, sys, datetime
single, load, health = (json.loads(x) for x in sys.argv[1:4])
moderate, spawn_rate = json.loads(sys.argv[7]), float(sys.argv[8])
r = {
    "date": datetime.date.today().isoformat(),
    "machine": "2 cores, Debian 12, kernel " + open("/proc/sys/kernel/osrelease").read().strip(),
    "boxes": int(sys.argv[4]), "connections": int(sys.argv[5]),
    "exec_true_one_client": single,
    "exec_true_moderate_load": moderate,
    "exec_true_loaded": load,
    "host_spawn_true_per_second": spawn_rate,
    "loaded_vs_host_spawn_ceiling": round(load["rps"] / spawn_rate, 3),
    "healthz_loaded": health,
    "load_vs_one_client_throughput": round(load["rps"] / single["rps"], 2),
    "exec_share_of_http_layer": round(load["rps"] / health["rps"], 4),
    "server_peak_rss_kib": int(sys.argv[6]),
    "targets": {"execs_per_second": 1000, "p99_ms": 20},
}
print(json.dumps(r, indent=2))
PY
)
echo "$result"
[ -n "$out" ] && echo "$result" >"$out"
exit 0
