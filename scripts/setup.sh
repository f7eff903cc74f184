#!/usr/bin/env bash
# Installs every Debian package upstream needs to build, test and run. Idempotent: a package that
# is already installed is left alone, so a second run costs one dpkg query.
set -euo pipefail

packages=(
  # toolchain
  build-essential cmake ninja-build pkg-config clang-format
  # libraries
  libseccomp-dev libcap-dev libsqlite3-dev nlohmann-json3-dev libcli11-dev
  libarchive-dev libssl-dev libzstd-dev zlib1g-dev libbz2-dev liblzma-dev liblz4-dev libacl1-dev
  libnettle8 nettle-dev
  libcmark-dev libyaml-cpp-dev
  # box networks: veth pairs over netlink, the host firewall (nftables brings libnftables1,
  # which upstream loads at run time to apply rulesets without running nft)
  libnl-3-dev libnl-route-3-dev nftables
  # the HTTP server (Boost.Beast, header-only)
  libboost-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  # the fuzz target (libFuzzer comes with clang)
  clang libclang-rt-14-dev
  # runtime tools: the btrfs storage pool, mounts, tar, process tools
  btrfs-progs util-linux e2fsprogs iproute2 procps psmisc tar zstd
  # a box's own /proc/meminfo, cpuinfo, uptime ... (runtime/proc_view.h)
  lxcfs
  # end-to-end tests and tooling
  python3 python3-pytest python3-jsonschema busybox-static curl
  # what boxes on the host image install packages with (pip, venv)
  python3-pip python3-venv
  # the test internet of the network tests: its CA and certificates
  openssl
  # the HTTP load generator of bench/
  wrk
)
# The TypeScript SDK's tests need Node (20 in the base image; Debian's own otherwise).
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  packages+=(nodejs npm)
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  if [ "$(id -u)" != 0 ]; then
    echo "setup: these packages are missing and installing them needs root: ${missing[*]}" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
