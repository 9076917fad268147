#!/usr/bin/env bash
# bench/cluster_detect.sh [RUNS] [TTL]: how long the cluster takes to see a killed node as down
# (issue "a cluster on etcd": <= lease TTL + 2 s). Starts one etcd (Debian etcd-server) and one
# chunkvaultd with [cluster] lease_ttl_s = TTL (default 10, the default of the config) on
# 127.0.0.1, kill -9s the node once it is registered, and polls etcd every 50 ms until its key
# is gone: the figure is kill -> key gone, per run, with the TTL beside it. Everything lives in
# a temporary folder under ${CV_BENCH_TMP:-/var/tmp}, removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
TTL=${2:-10}
BIN=${CV_BUILD_DIR:-build}/bin
[ -x "$BIN/chunkvaultd" ] || { echo "build chunkvaultd first ($BIN)" >&2; exit 1; }
command -v etcd >/dev/null || { echo "etcd missing: deploy/install-deps.sh" >&2; exit 1; }
TMP=$(mktemp -d "${CV_BENCH_TMP:-/var/tmp}/cv-detect.XXXXXX")
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
CLIENT="http://127.0.0.1:$(port)"
PEER="http://127.0.0.1:$(port)"
etcd --name b --data-dir "$TMP/etcd" --listen-client-urls "$CLIENT" --advertise-client-urls "$CLIENT" \
  --listen-peer-urls "$PEER" --initial-advertise-peer-urls "$PEER" --initial-cluster "b=$PEER" \
  > "$TMP/etcd.log" 2>&1 &
ETCD=$!
NODE=
cleanup() {
  [ -n "$NODE" ] && kill -9 "$NODE" 2>/dev/null || true
  kill "$ETCD" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT
KEY=$(printf '/chunkvault/v1/nodes/bench' | base64)
present() {
  curl -sf -X POST "$CLIENT/v3/kv/range" -d "{\"key\":\"$KEY\"}" | grep -q '"kvs"'
}
for _ in $(seq 1 100); do curl -sf -X POST "$CLIENT/v3/kv/range" -d '{"key":"Lw=="}' >/dev/null && break; sleep 0.1; done
printf 'etcd %s; lease_ttl_s = %s\n' "$(etcd --version | head -1)" "$TTL"
printf '%s\n' "[cluster]" "etcd_endpoints = [\"$CLIENT\"]" 'node_id = "bench"' "lease_ttl_s = $TTL" > "$TMP/c.toml"
for run in $(seq 1 "$RUNS"); do
  rm -rf "$TMP/node"
  "$BIN/chunkvaultd" --config "$TMP/c.toml" --root "$TMP/node" --listen 127.0.0.1:0 \
    --admin-listen 127.0.0.1:0 > "$TMP/node.log" 2>&1 &
  NODE=$!
  for _ in $(seq 1 300); do present && break; sleep 0.1; done
  present || { echo "the node did not register" >&2; cat "$TMP/node.log" >&2; exit 1; }
  sleep 1
  t0=$(date +%s.%N)
  kill -9 "$NODE"
  wait "$NODE" 2>/dev/null || true
  NODE=
  while present; do sleep 0.05; done
  t1=$(date +%s.%N)
  python3 -c "import sys; d=float(sys.argv[2])-float(sys.argv[1]); t=float(sys.argv[3]); print(f'run {sys.argv[4]}: kill -9 -> key gone in {d:.2f} s = TTL + {d-t:+.2f} s (goal <= TTL + 2 s: {\"met\" if d <= t + 2 else \"NOT met\"})')" "$t0" "$t1" "$TTL" "$run"
done
