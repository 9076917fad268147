# shellcheck shell=bash disable=SC2034
# bench/lib/servers.sh: sourced by bench/compare.sh and bench/run.sh (not run on its own).
# Builds the Release binaries, pins the servers and the loader, starts chunkvaultd, nginx
# (WebDAV PUT) and rclone serve restic on 127.0.0.1 over TLS, runs the one loader
# (build/bin/loadgen) against them, and stops every server on exit. Temporary data lives
# under ${CV_BENCH_TMP:-/var/tmp} and is removed at the end; the run is bounded in time.
#
# The caller sets BENCH_NAME (log prefix) and KEEP (1 = keep the temp folder), then calls
#   bench_build TARGET...        install the packages (deploy/install-deps.sh --bench), build
#   bench_init BUDGET_S          temp folder $TMP, traps, watchdog, peer certificate
#   start_server PEER [ARGS]     PEER = cv | nginx | rclone (or sink: bench/lib/bound.sh); on
#                                success sets SRV_PID, SRV_URL, SRV_CA, SRV_MODE, SRV_USER,
#                                SRV_PASS (and CV_ROOT for cv);
#                                on failure returns 1 with the reason in SRV_NOTE
#                                (start_server cv CONFIG.toml runs chunkvaultd with that config)
#   restart_cv                   chunkvaultd again on the same root, device and credentials
#   stop_server                  stops the server started last and removes its data
#   run_loader OUT N SIZE CONNS [loadgen args]   against the current server (pinned)
# A function bench_exit_hook, if the caller defines one, runs on exit before the cleanup.

BENCH_SELF=$(realpath "$0")  # the script that sourced this file
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
SRC=$(pwd)

log() { printf '[%s %s] %s\n' "${BENCH_NAME:-bench}" "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- build (Release)
bench_build() {
  ./deploy/install-deps.sh --bench >&2  # the project's packages plus nginx, rclone, htpasswd, gnuplot, fio
  BUILD=${CV_BUILD_DIR:-build}
  if [ -f "$BUILD/CMakeCache.txt" ] && ! grep -q '^CMAKE_BUILD_TYPE:STRING=Release$' "$BUILD/CMakeCache.txt"; then
    log "$BUILD is not a Release build: using build-release"
    BUILD=build-release
  fi
  if [ ! -f "$BUILD/CMakeCache.txt" ]; then
    cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release >&2
  fi
  ninja -C "$BUILD" -j"${CV_BUILD_JOBS:-2}" chunkvaultd loadgen "$@" >&2
  BIN=$SRC/$BUILD/bin
  CVD=${CV_BENCH_CVD:-$BIN/chunkvaultd}  # CV_BENCH_CVD: another build of it, for before/after runs
  LOADGEN=$BIN/loadgen
  [ -x "$CVD" ] && [ -x "$LOADGEN" ] || die "build did not produce $CVD and $LOADGEN"
  local tool
  for tool in curl openssl python3 taskset timeout; do
    command -v "$tool" >/dev/null || die "$tool is missing"
  done
}

# ---------------------------------------------------------------- pinning
NCPU=$(nproc)
if [ "$NCPU" -ge 2 ]; then
  PIN_SERVER=(taskset -c 0)
  PIN_LOADER=(taskset -c 1)
  PINNING="server on core 0, loader on core 1 (taskset)"
else
  PIN_SERVER=() PIN_LOADER=()
  PINNING="no pinning: only $NCPU CPU"
fi

# ---------------------------------------------------------------- temp dir, cleanup, watchdog
PIDS=()          # servers started here
LOADER_PID=""
WATCHDOG_PID=""
SRV_PID=""

stop_pid() {  # SIGTERM, wait up to 15 s, then SIGKILL
  local pid=$1 i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 150); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "pid $pid did not stop after SIGTERM: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

bench_cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  [ -n "$LOADER_PID" ] && stop_pid "$LOADER_PID"
  local p
  for p in "${PIDS[@]}"; do stop_pid "$p"; done
  [ -n "$WATCHDOG_PID" ] && kill "$WATCHDOG_PID" 2>/dev/null && wait "$WATCHDOG_PID" 2>/dev/null
  if declare -F bench_exit_hook >/dev/null; then bench_exit_hook || rc=1; fi
  if [ "${KEEP:-0}" = 1 ]; then log "kept $TMP"; else rm -rf "$TMP"; fi
  exit "$rc"
}

bench_init() {  # bench_init SECONDS: the watchdog stops the run after SECONDS
  local watchdog_s=$1
  BENCH_START=$(date +%s)
  mkdir -p "${CV_BENCH_TMP:-/var/tmp}"
  TMP=$(mktemp -d "${CV_BENCH_TMP:-/var/tmp}/cv-${BENCH_NAME:-bench}.XXXXXX")
  trap bench_cleanup EXIT
  trap 'log "interrupted"; exit 130' INT
  trap 'log "the watchdog stopped the run after '"$watchdog_s"' s (or SIGTERM)"; exit 124' TERM
  ( trap 'kill "$sp" 2>/dev/null; exit 0' TERM
    sleep "$watchdog_s" & sp=$!
    wait "$sp" && kill -TERM $$ 2>/dev/null ) &
  WATCHDOG_PID=$!
  # One TLS certificate for nginx and rclone: self-signed P-256 (the key type chunkvaultd generates).
  CERT=$TMP/peer-cert.pem KEY=$TMP/peer-key.pem
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=127.0.0.1 -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" \
    -keyout "$KEY" -out "$CERT" 2>/dev/null || die "openssl could not make a certificate"
}

elapsed_s() { echo $(( $(date +%s) - BENCH_START )); }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# wait_https URL CA PID: until an HTTPS request gets any HTTP answer (20 s at most)
wait_https() {
  local url=$1 ca=$2 pid=$3 i
  for i in $(seq 200); do
    kill -0 "$pid" 2>/dev/null || return 1
    if curl -s -o /dev/null --max-time 2 --cacert "$ca" "$url"; then return 0; fi
    sleep 0.1
  done
  return 1
}

# ---------------------------------------------------------------- servers
# chunkvaultd's worker threads: its default (one per CPU it may run on: 1 on the pinned core)
CV_THREADS=${CV_BENCH_CV_THREADS:-}
# CV_BENCH_CV_CONFIG=FILE: a chunkvaultd TOML to run with (default: the embedded default)

start_server() {
  local peer=$1
  shift
  SRV_PID="" SRV_NOTE="" SRV_USER="" SRV_PASS="" SRV_DIR=""
  "start_$peer" "$@"
}

stop_server() {
  [ -n "$SRV_PID" ] && stop_pid "$SRV_PID"
  [ -n "$SRV_DIR" ] && rm -rf "$SRV_DIR"
  SRV_PID="" SRV_DIR=""
}

# --- chunkvaultd: defaults (6 disk folders under its root, 4+2, O_DIRECT, fsync, SHA-256 check)
# start_cv [CONFIG]: CONFIG is a TOML file (default: $CV_BENCH_CV_CONFIG or the embedded default);
# a fresh node with one account and one device.
start_cv() {
  CV_CONFIG=${1:-${CV_BENCH_CV_CONFIG:-}}
  CV_ROOT=$TMP/cv SRV_DIR=$TMP/cv
  mkdir -p "$CV_ROOT"
  : >"$TMP/cv.log"
  launch_cv
  cv_device
}

# start_cvnull: the null-disk node, chunkvaultd with [storage] bench_discard_writes (its data
# disks keep nothing: writes and syncs of extents complete at once), the default configuration
# otherwise. Uploads only: what it stores cannot be read back. It measures our own code's CPU
# cost per uploaded byte.
start_cvnull() {
  printf '[storage]\nbench_discard_writes = true\n' >"$TMP/cvnull.toml"
  start_cv "$TMP/cvnull.toml"
}

# restart_cv: stops chunkvaultd and starts it again on the same root, device and credentials
# (between the two, the caller may change its files).
restart_cv() {
  [ -n "$SRV_PID" ] && stop_pid "$SRV_PID"
  launch_cv
  SRV_URL="$CV_AGENT/$SRV_USER/"
}

launch_cv() {
  "${PIN_SERVER[@]}" "$CVD" ${CV_CONFIG:+--config "$CV_CONFIG"} --root "$CV_ROOT" \
    --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 ${CV_THREADS:+--threads "$CV_THREADS"} >>"$TMP/cv.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  SRV_PID=$pid
  local ep=$CV_ROOT/run/endpoints.json i up=0
  for i in $(seq 600); do
    kill -0 "$pid" 2>/dev/null || { tail -20 "$TMP/cv.log" >&2; die "chunkvaultd exited at start-up"; }
    if [ -f "$ep" ] && python3 -c "import json,sys; sys.exit(json.load(open('$ep'))['pid'] != $pid)" 2>/dev/null; then
      up=1
      break
    fi
    sleep 0.1
  done
  [ "$up" = 1 ] || die "chunkvaultd wrote no $ep in 60 s"
  local keyfile
  read -r CV_AGENT CV_ADMIN SRV_CA keyfile < <(python3 -c "import json; e=json.load(open('$ep')); print(e['agent'], e['admin'], e['ca'], e['admin_key_file'])")
  CV_KEY=$(cat "$keyfile")
  log "chunkvaultd pid $pid on $CV_AGENT (${CV_THREADS:-default} worker thread(s))"
}

# cv_device: an account and a device on the running node -> SRV_USER, SRV_PASS, SRV_URL
cv_device() {
  local admin=$CV_ADMIN key=$CV_KEY acct="" dev body
  # An active account with a quota far above what the run uploads (1 TiB); '{}' for builds
  # from before accounts had plans.
  for body in '{"plan_quota_bytes":1099511627776,"device_limit":10,"status":"active"}' '{}'; do
    acct=$(curl -sS --fail --max-time 10 --cacert "$SRV_CA" -X POST -H "Authorization: Bearer $key" \
      -H 'Content-Type: application/json' -d "$body" "$admin/admin/v1/accounts" 2>/dev/null |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])' 2>/dev/null) && break
  done
  [ -n "$acct" ] || die "chunkvaultd: cannot create an account through $admin/admin/v1/accounts"
  dev=$(curl -sS --fail-with-body --max-time 10 --cacert "$SRV_CA" -X POST -H "Authorization: Bearer $key" \
    -H 'Content-Type: application/json' -d '{"name":"bench","kind":"computer","append_only":false}' \
    "$admin/admin/v1/accounts/$acct/devices") || die "chunkvaultd: cannot create a device"
  read -r SRV_USER SRV_PASS < <(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(d["id"], d["token"])' "$dev")
  SRV_URL="$CV_AGENT/$SRV_USER/" SRV_MODE=restic
  log "chunkvaultd: device $SRV_USER"
}

# --- nginx: Debian package, one worker, WebDAV PUT, TLS
start_nginx() {
  command -v nginx >/dev/null || { SRV_NOTE="not run: nginx is not installed (apt-get install nginx)"; return 1; }
  local dir=$TMP/nginx port
  SRV_DIR=$dir
  mkdir -p "$dir/data" "$dir/client_body"
  port=$(free_port)
  local user_line=""
  [ "$(id -u)" = 0 ] && user_line="user root;"   # the worker must reach the 0700 temp folder
  sed -e "s|@DIR@|$dir|g" -e "s|@DATA@|$dir/data|g" -e "s|@PORT@|$port|g" \
    -e "s|@CERT@|$CERT|g" -e "s|@KEY@|$KEY|g" -e "s|@USER_LINE@|$user_line|g" \
    bench/peers/nginx.conf.in >"$dir/nginx.conf"
  "${PIN_SERVER[@]}" nginx -e "$dir/error.log" -p "$dir" -c "$dir/nginx.conf" >"$dir/stdout.log" 2>&1 &
  SRV_PID=$!
  PIDS+=("$SRV_PID")
  if ! wait_https "https://127.0.0.1:$port/" "$CERT" "$SRV_PID"; then
    SRV_NOTE="not run: nginx did not start ($(tail -3 "$dir/error.log" "$dir/stdout.log" 2>/dev/null | tr '\n' ' '))"
    stop_server
    return 1
  fi
  SRV_URL="https://127.0.0.1:$port/" SRV_CA=$CERT SRV_MODE=put
  log "nginx pid $SRV_PID on $SRV_URL (1 worker)"
}

# --- rclone serve restic: Debian package, TLS, htpasswd, local directory
start_rclone() {
  command -v rclone >/dev/null || { SRV_NOTE="not run: rclone is not installed (apt-get install rclone)"; return 1; }
  command -v htpasswd >/dev/null || { SRV_NOTE="not run: htpasswd is missing (apt-get install apache2-utils)"; return 1; }
  local dir=$TMP/rclone port
  SRV_DIR=$dir
  mkdir -p "$dir/data" "$dir/cache"
  : >"$dir/rclone.conf"
  SRV_USER=bench SRV_PASS=$(openssl rand -hex 16)
  htpasswd -cbB "$dir/htpasswd" "$SRV_USER" "$SRV_PASS" 2>/dev/null
  port=$(free_port)
  "${PIN_SERVER[@]}" rclone serve restic "$dir/data" --addr "127.0.0.1:$port" \
    --cert "$CERT" --key "$KEY" --htpasswd "$dir/htpasswd" \
    --config "$dir/rclone.conf" --cache-dir "$dir/cache" >"$dir/rclone.log" 2>&1 &
  SRV_PID=$!
  PIDS+=("$SRV_PID")
  if ! wait_https "https://127.0.0.1:$port/" "$CERT" "$SRV_PID"; then
    SRV_NOTE="not run: rclone did not start ($(tail -3 "$dir/rclone.log" | tr '\n' ' '))"
    stop_server
    return 1
  fi
  SRV_URL="https://127.0.0.1:$port/" SRV_CA=$CERT SRV_MODE=restic
  log "rclone pid $SRV_PID on $SRV_URL ($(rclone version 2>/dev/null | head -1))"
}

# ---------------------------------------------------------------- the loader
LOAD_TIMEOUT_S=${CV_BENCH_LOAD_TIMEOUT_S:-600}  # one loader run (upload + restore)

# run_loader OUT N SIZE CONNS [loadgen args...]: returns the loader's exit status; its output
# (RESULT lines last) is in OUT and, indented, on stderr.
run_loader() {
  local out=$1 n=$2 size=$3 conns=$4 rc
  shift 4
  local auth=()
  [ -n "$SRV_USER" ] && auth=(--user "$SRV_USER" --password "$SRV_PASS")
  sync -f "$TMP" 2>/dev/null || sync
  set +e
  timeout --kill-after=10 "$LOAD_TIMEOUT_S" "${PIN_LOADER[@]}" "$LOADGEN" --url "$SRV_URL" \
    --cacert "$SRV_CA" "${auth[@]}" --objects "$n" --size "$size" --conns "$conns" \
    --mode "$SRV_MODE" --timeout 120 --seed 42 "$@" >"$out" 2>&1 &
  LOADER_PID=$!
  wait "$LOADER_PID"
  rc=$?
  LOADER_PID=""
  set -e
  { grep -v '^RESULT' "$out" || true; } | sed "s/^/  /" >&2
  return "$rc"
}
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; }

machine_line() {  # cores, CPU, kernel, file system of $TMP
  echo "$NCPU CPU ($(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')), kernel $(uname -r), temp data on $(df -hT "$TMP" | awk 'NR==2{print $2, $1, "(" $3 ")"}')"
}
