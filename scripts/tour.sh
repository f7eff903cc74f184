#!/usr/bin/env bash
# A short tour: create a box, run commands in it, move files in and out, run something in the
# background, stop and start it with its files intact, remove it.
set -euo pipefail
up=${1:-build/upstream}
name="demo-$(head -c 3 /dev/urandom | od -An -tx1 | tr -d ' \n')"

say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
run() { say "$*"; "$@"; }
cleanup() { "$up" box rm -f "$name" >/dev/null 2>&1 || true; }
trap cleanup EXIT

run "$up" system info
run "$up" box create --name "$name" --memory 512m --cpus 1 --label demo=yes
run "$up" box ls --label demo=yes
run "$up" box exec "$name" -- uname -srm
run "$up" box exec "$name" -- sh -c 'id; hostname; pwd; ls /home /root'

tmp=$(mktemp -d)
cat > "$tmp/stats.py" <<'PY'
import csv, random, statistics
random.seed(7)
rows = [{"id": i, "value": round(random.gauss(42, 9), 2)} for i in range(500)]
with open("data.csv", "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=["id", "value"])
    w.writeheader()
    w.writerows(rows)
values = [r["value"] for r in rows]
print(f"records: {len(values)}  mean: {statistics.mean(values):.1f}  median: {statistics.median(values):.1f}")
PY
run "$up" box cp "$tmp/stats.py" "$name:/home/user/"
run "$up" box exec "$name" -- python3 stats.py
run "$up" box cp "$name:/home/user/data.csv" "$tmp/data.csv"
say "head -3 $tmp/data.csv"; head -3 "$tmp/data.csv"

say "$up box exec -d $name -- sh -c 'for i in 1 2 3; do echo tick \$i; sleep 0.2; done'"
seq=$("$up" box exec -d "$name" -- sh -c 'for i in 1 2 3; do echo tick $i; sleep 0.2; done')
echo "$seq"
sleep 1
run "$up" box logs "$name" "$seq"
run "$up" box logs "$name"

run "$up" box stop "$name"
run "$up" box start "$name"
run "$up" box exec "$name" -- ls -l /home/user
run "$up" box inspect "$name"
run "$up" box rm -f "$name"
rm -rf "$tmp"
trap - EXIT
printf '\ndemo finished\n'
