#!/usr/bin/env bash
# Installs every Debian package that chunkvault's build, tests and benchmarks need.
# Idempotent and quiet: installs only what is missing; fails loudly on any error.
set -euo pipefail

PKGS=(
  build-essential cmake ninja-build ccache pkg-config git
  liburing-dev libisal-dev libxxhash-dev liblmdb-dev lmdb-utils
  libboost1.81-dev libboost-json1.81-dev libboost-url1.81-dev
  libssl-dev openssl libgtest-dev libgmock-dev libexpected-dev libtomlplusplus-dev
  libcli11-dev prometheus-cpp-dev
  clang clang-14 libclang-rt-14-dev  # clang-14 + its runtime: libFuzzer (tests/fuzz)
  restic curl python3 python3-pytest python3-yaml procps
  exfatprogs exfat-fuse fdisk util-linux
  etcd-server etcd-client  # the cluster tests start their own etcd (tests/integration/etcd.py)
)

# --bench: also the peers the benchmarks compare against (bench/compare.sh asks for them) and
# fio (compare.sh's disk bound) and linux-perf (bench/profile_upload.sh).
# Kept out of the default set so that CI and run.sh never install or start web servers.
if [ "${1:-}" = "--bench" ]; then
  PKGS+=(nginx rclone apache2-utils gnuplot fio linux-perf)
fi

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
