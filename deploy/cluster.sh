#!/usr/bin/env bash
# A chunkvault cluster on this machine, for trying it and for tests: one etcd (Debian
# etcd-server) and three nodes, each on 127.0.0.1 with kernel-chosen ports.
#
#   deploy/cluster.sh up       # install what is missing, build, start etcd and node1..node3;
#                              # returns once every node has registered in etcd
#   deploy/cluster.sh status   # cvctl cluster status through node1
#   deploy/cluster.sh down     # SIGTERM every node (each leaves the cluster), then etcd
#
# Everything lives under CV_CLUSTER_ROOT (default ./var/cluster): etcd's data in ROOT/etcd,
# each node's root in ROOT/node1..node3 (its run/endpoints.json as a single node writes it, its
# log in ROOT/nodeN/chunkvaultd.log), the pids in ROOT/*.pid. A second `up` reuses the data.
set -euo pipefail

cd "$(dirname "$0")/.."
SRC=$(pwd)
ROOT=${CV_CLUSTER_ROOT:-$SRC/var/cluster}
NODES=(node1 node2 node3)
JOBS=${JOBS:-2}
BUILD=${CV_BUILD_DIR:-$SRC/build}  # the tests point it at their build

die() { echo "cluster.sh: $*" >&2; exit 1; }
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

stop_pid() {  # stop_pid FILE NAME: SIGTERM, wait up to 30 s, then SIGKILL
  local file=$1 name=$2 pid
  alive "$file" || { rm -f "$file"; return 0; }
  pid=$(cat "$file")
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    echo "cluster.sh: $name did not stop within 30 s: killed" >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$file"
  echo "stopped $name"
}

up() {
  ./deploy/install-deps.sh
  [ -f "$BUILD/CMakeCache.txt" ] || cmake -S "$SRC" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
  ninja -C "$BUILD" -j"$JOBS" chunkvaultd cvctl >/dev/null
  mkdir -p "$ROOT/etcd"
  # etcd: its ports are chosen once and kept (ROOT/etcd/url), so that the nodes' configs stay valid.
  if [ ! -s "$ROOT/etcd/url" ]; then
    echo "http://127.0.0.1:$(free_port) http://127.0.0.1:$(free_port)" > "$ROOT/etcd/url"
  fi
  read -r CLIENT PEER < "$ROOT/etcd/url"
  if ! alive "$ROOT/etcd.pid"; then
    etcd --name cluster --data-dir "$ROOT/etcd/data" \
      --listen-client-urls "$CLIENT" --advertise-client-urls "$CLIENT" \
      --listen-peer-urls "$PEER" --initial-advertise-peer-urls "$PEER" \
      --initial-cluster "cluster=$PEER" >> "$ROOT/etcd/etcd.log" 2>&1 &
    echo $! > "$ROOT/etcd.pid"
  fi
  for _ in $(seq 1 100); do
    curl -sf -X POST "$CLIENT/v3/kv/range" -d '{"key":"Lw=="}' >/dev/null && break
    alive "$ROOT/etcd.pid" || die "etcd exited (see $ROOT/etcd/etcd.log)"
    sleep 0.1
  done
  curl -sf -X POST "$CLIENT/v3/kv/range" -d '{"key":"Lw=="}' >/dev/null || die "etcd did not answer within 10 s"
  echo "etcd on $CLIENT"

  for n in "${NODES[@]}"; do
    local dir="$ROOT/$n"
    mkdir -p "$dir"
    cat > "$dir/chunkvaultd.toml" <<TOML
[cluster]
etcd_endpoints = ["$CLIENT"]
node_id = "$n"
TOML
    alive "$dir.pid" && continue
    rm -f "$dir/run/endpoints.json"
    "$BUILD/bin/chunkvaultd" --config "$dir/chunkvaultd.toml" --root "$dir" \
      --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 >> "$dir/chunkvaultd.log" 2>&1 &
    echo $! > "$dir.pid"
  done
  # Ready: every node wrote its endpoints.json (after registering in etcd).
  for n in "${NODES[@]}"; do
    for _ in $(seq 1 300); do
      [ -s "$ROOT/$n/run/endpoints.json" ] && break
      alive "$ROOT/$n.pid" || die "$n exited during start-up (see $ROOT/$n/chunkvaultd.log)"
      sleep 0.1
    done
    [ -s "$ROOT/$n/run/endpoints.json" ] || die "$n did not come up within 30 s"
    echo "$n: $(python3 -c 'import json,sys; e=json.load(open(sys.argv[1])); print("agent", e["agent"], "admin", e["admin"])' "$ROOT/$n/run/endpoints.json")"
  done
}

down() {
  for n in "${NODES[@]}"; do stop_pid "$ROOT/$n.pid" "$n"; done
  stop_pid "$ROOT/etcd.pid" etcd
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) "$BUILD/bin/cvctl" --root "$ROOT/node1" cluster status ;;
  *) echo "usage: deploy/cluster.sh up|down|status   (CV_CLUSTER_ROOT, default ./var/cluster)" >&2; exit 2 ;;
esac
