#!/usr/bin/env bash
# Installs what is missing, builds chunkvaultd and cvctl (Release, build/), and runs a node in the
# foreground on the embedded default: everything under ./var/chunkvault (6 data disks, 4+2,
# the index, a generated self-signed CA + server certificate). On first start it creates a dev
# account and one device and prints the restic command lines that back up to it.
#
#   deploy/run.sh                       # embedded default
#   deploy/run.sh --config my.toml      # any chunkvaultd flags are passed through
#   CV_ROOT=/srv/cv deploy/run.sh       # another root folder
#
# Ctrl-C (or SIGTERM) drains and stops the node.
set -euo pipefail

cd "$(dirname "$0")/.."
SRC=$(pwd)
ROOT=${CV_ROOT:-$SRC/var/chunkvault}
JOBS=${JOBS:-2}

./deploy/install-deps.sh

cmake -S "$SRC" -B "$SRC/build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
# cvctl too: README's "Operating a node" uses build/bin/cvctl against this node.
ninja -C "$SRC/build" -j"$JOBS" chunkvaultd cvctl

mkdir -p "$ROOT"
ENDPOINTS="$ROOT/run/endpoints.json"
rm -f "$ENDPOINTS"
"$SRC/build/bin/chunkvaultd" --root "$ROOT" "$@" &
PID=$!
trap 'kill -TERM "$PID" 2>/dev/null || true; wait "$PID" || true; exit 0' INT TERM

# chunkvaultd writes endpoints.json once it accepts connections.
for _ in $(seq 1 300); do
  [ -s "$ENDPOINTS" ] && break
  if ! kill -0 "$PID" 2>/dev/null; then
    wait "$PID" || true
    echo "run.sh: chunkvaultd exited during start-up (see its log above)" >&2
    exit 1
  fi
  sleep 0.1
done
if [ ! -s "$ENDPOINTS" ]; then
  echo "run.sh: chunkvaultd did not come up within 30 s" >&2
  kill -TERM "$PID" 2>/dev/null || true
  exit 1
fi

field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }
AGENT=$(field "$ENDPOINTS" agent)
ADMIN=$(field "$ENDPOINTS" admin)
CA=$(field "$ENDPOINTS" ca)
KEY_FILE=$(field "$ENDPOINTS" admin_key_file)

admin() {  # admin METHOD PATH [JSON]
  curl -sS --fail-with-body --max-time 10 --cacert "$CA" -H "Authorization: Bearer $(cat "$KEY_FILE")" \
    -H 'Content-Type: application/json' -X "$1" "$ADMIN/admin/v1$2" ${3:+-d "$3"}
}

# The dev account and device: created once, the token kept (mode 0600) so that later starts can
# print it again. Recreated if the index no longer knows them (or the device has no account
# record, as devices made before accounts existed).
DEV_FILE="$ROOT/run/dev-device.json"
DEV_STATE="$ROOT/run/dev-device.state.json"
if [ -s "$DEV_FILE" ] && [ -r "$KEY_FILE" ]; then
  if ! admin GET "/accounts/$(field "$DEV_FILE" account)/devices/$(field "$DEV_FILE" id)" >"$DEV_STATE" 2>/dev/null; then
    rm -f "$DEV_FILE"
  fi
fi
if [ ! -s "$DEV_FILE" ]; then
  if [ ! -r "$KEY_FILE" ]; then
    echo "run.sh: no admin key in $KEY_FILE; restart with: deploy/run.sh --new-admin-key" >&2
  else
    # A dev account of the operator's own (no partner): active, no expiry, 1 PiB, 10 devices.
    ACCOUNT=$(admin POST /accounts '{"status":"active","plan_quota_bytes":1125899906842624,"device_limit":10}' |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
    (umask 077; admin POST "/accounts/$ACCOUNT/devices" '{"name":"dev-laptop","kind":"computer","append_only":true}' >"$DEV_FILE")
    cp "$DEV_FILE" "$DEV_STATE"
  fi
fi

if [ -s "$DEV_FILE" ]; then
  DEV=$(field "$DEV_FILE" id)
  TOKEN=$(field "$DEV_FILE" token)
  ACCOUNT=$(field "$DEV_FILE" account)
  MODE="deletes allowed"
  [ "$(field "$DEV_STATE" append_only)" = True ] && MODE="append-only"
  URL="rest:${AGENT/https:\/\//https://$DEV:$TOKEN@}/$DEV/"
  cat <<EOF

chunkvaultd is running (pid $PID)
  agent API   $AGENT        admin API   $ADMIN
  CA          $CA
  admin key   $KEY_FILE
  dev device  $DEV (account $ACCOUNT, $MODE)

Back up to it with restic (choose your own repository password):
  export RESTIC_PASSWORD=choose-a-password
  restic -r $URL --cacert $CA init
  restic -r $URL --cacert $CA backup ~/Documents
  restic -r $URL --cacert $CA snapshots
  restic -r $URL --cacert $CA restore latest --target /tmp/restore

An append-only device lets agents delete only locks. To allow 'forget --prune':
  curl --cacert $CA -H "Authorization: Bearer \$(cat $KEY_FILE)" -X PATCH \\
    -d '{"append_only":false}' $ADMIN/admin/v1/accounts/$ACCOUNT/devices/$DEV

Operate it with cvctl (see README, "Operating a node"):
  $SRC/build/bin/cvctl --root $ROOT status

Ctrl-C stops the node.
EOF
fi

wait "$PID"
