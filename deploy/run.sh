#!/usr/bin/env bash
# Installs what is missing, builds (Release) and runs the storage engine's self-check.
# (This becomes the HTTPS node once server/ lands.)
set -euo pipefail
cd "$(dirname "$0")/.."
./deploy/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
ninja -C build
exec ./build/bin/ingest_bench "${CV_ROOT:-$PWD/var/selfcheck}" 4 1
