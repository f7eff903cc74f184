#!/usr/bin/env bash
# The benchmark: upstream against the host's own process start and against bwrap, runc and
# docker (each when installed; `--install-peers` installs them from Debian), in one run.
#   bench/run.sh [BUILD_DIR] [--install-peers] [upstream_bench options...]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
shift || true
install=0
args=()
for a in "$@"; do
  if [ "$a" = "--install-peers" ]; then install=1; else args+=("$a"); fi
done
if [ "$install" = 1 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends bubblewrap runc docker.io >/dev/null
fi

# A small root filesystem for the container peers: busybox from Debian's busybox-static.
work=$(mktemp -d)
started_dockerd=""
cleanup() {
  [ -n "$started_dockerd" ] && kill "$started_dockerd" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/rootfs/bin" "$work/rootfs/etc" "$work/rootfs/tmp" "$work/rootfs/proc" "$work/rootfs/dev" "$work/rootfs/sys"
cp /bin/busybox "$work/rootfs/bin/"
for c in sh true sleep; do ln -sf busybox "$work/rootfs/bin/$c"; done
echo 'root:x:0:0:root:/root:/bin/sh' > "$work/rootfs/etc/passwd"
tar -C "$work/rootfs" -cf "$work/rootfs.tar" .

if command -v dockerd >/dev/null && ! docker info >/dev/null 2>&1; then
  dockerd >"$work/dockerd.log" 2>&1 &
  started_dockerd=$!
  for _ in $(seq 50); do docker info >/dev/null 2>&1 && break; sleep 0.2; done
fi

"$build/bench/upstream_bench" --upstream "$build/upstream" --rootfs-tar "$work/rootfs.tar" "${args[@]}"
