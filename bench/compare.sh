#!/usr/bin/env bash
# bench/compare.sh: chunkvaultd vs nginx (WebDAV PUT) vs rclone serve restic, in one run, with the
# same loader (build/bin/loadgen) and the same CPU pinning (server on core 0, loader on core 1),
# all on 127.0.0.1 over TLS. Prints a markdown table of upload and restore MiB/s and the ratios
# chunkvaultd/nginx and chunkvaultd/rclone.
#
#   bench/compare.sh [--quick] [--runs R] [--conns C] [--cold] [--keep] [--sets NxMiB,...] [--only cv,nginx,rclone]
#
#   full:    1000 x 4 MiB and 200 x 16 MiB per server (uploads, then every object read back)
#   --quick:  100 x 4 MiB and  20 x 16 MiB
#   --runs:   repeat the whole comparison R times (servers started afresh each time) and print
#             the median with min-max (default 3 with --quick, 1 in full mode)
#   --conns:  concurrent keep-alive TLS connections of the loader (default 4)
#   --cold:   drop the page cache (sync; echo 3 > /proc/sys/vm/drop_caches, needs root) between
#             each upload and its restore; by default restores follow the upload at once, so
#             nginx and rclone serve them from the page cache while chunkvaultd reads with O_DIRECT
#   --keep:   keep the temporary folder (logs, configs, loader outputs; each server's data
#             folder is still removed once it is measured, to bound the disk space used)
#   --sets:   other workloads, e.g. --sets 10x1,5x16 (objects x MiB)
#   --only:   a subset of the servers, e.g. --only cv,nginx
#
# Needs the Debian packages nginx, rclone, apache2-utils (htpasswd), openssl, curl, python3,
# util-linux (taskset); a missing peer is reported and left out of the table. Temporary data
# goes under ${CV_BENCH_TMP:-/var/tmp} (a real file system, not tmpfs) and is removed at the end.
# Every server started here is stopped on exit, and the whole run is bounded in time
# (CV_BENCH_BUDGET_S, default 600 s with --quick and 1200 s in full mode, build excluded).
# Exit status 1 when any loader run had errors (the table is printed all the same).
set -euo pipefail

usage() { sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }

QUICK=0 RUNS="" CONNS=4 COLD=0 KEEP=0 ONLY="cv,nginx,rclone" CUSTOM_SETS=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --conns) CONNS="$2"; shift ;;
    --runs) RUNS="$2"; shift ;;
    --cold) COLD=1 ;;
    --keep) KEEP=1 ;;
    --only) ONLY="$2"; shift ;;
    --sets) CUSTOM_SETS="$2"; shift ;;
    -h|--help) usage ;;
    *) echo "compare.sh: unknown argument $1" >&2; usage ;;
  esac
  shift
done

cd "$(dirname "$0")/.."
SRC=$(pwd)
if [ "$QUICK" = 1 ]; then
  SETS=("100 4" "20 16")          # objects, MiB
  RUNS=${RUNS:-3}
  BUDGET_S=${CV_BENCH_BUDGET_S:-600}
else
  SETS=("1000 4" "200 16")
  RUNS=${RUNS:-1}
  BUDGET_S=${CV_BENCH_BUDGET_S:-1200}
fi
if [ -n "$CUSTOM_SETS" ]; then
  SETS=()
  for s in ${CUSTOM_SETS//,/ }; do
    [[ "$s" =~ ^[0-9]+x[0-9]+$ ]] || { echo "compare.sh: bad --sets item $s" >&2; exit 2; }
    SETS+=("${s%x*} ${s#*x}")
  done
fi
LOAD_TIMEOUT_S=${CV_BENCH_LOAD_TIMEOUT_S:-600}  # one loader run (upload + restore)
CV_THREADS=${CV_BENCH_CV_THREADS:-2}             # chunkvaultd's default worker threads
# CV_BENCH_CV_CONFIG=FILE: a chunkvaultd TOML to run with (default: the embedded default)

log() { printf '[compare %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- build (Release)
./deploy/install-deps.sh --bench >&2  # the project's packages plus nginx, rclone, htpasswd
BUILD=${CV_BUILD_DIR:-build}
if [ -f "$BUILD/CMakeCache.txt" ] && ! grep -q '^CMAKE_BUILD_TYPE:STRING=Release$' "$BUILD/CMakeCache.txt"; then
  log "$BUILD is not a Release build: using build-release"
  BUILD=build-release
fi
if [ ! -f "$BUILD/CMakeCache.txt" ]; then
  cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release >&2
fi
ninja -C "$BUILD" -j"${CV_BUILD_JOBS:-2}" chunkvaultd loadgen >&2
CVD=$SRC/$BUILD/bin/chunkvaultd
LOADGEN=$SRC/$BUILD/bin/loadgen
[ -x "$CVD" ] && [ -x "$LOADGEN" ] || die "build did not produce $CVD and $LOADGEN"

for tool in curl openssl python3 taskset timeout; do
  command -v "$tool" >/dev/null || die "$tool is missing"
done

# ---------------------------------------------------------------- pinning
NCPU=$(nproc)
if [ "$NCPU" -ge 2 ]; then
  PIN_SERVER=(taskset -c 0)
  PIN_LOADER=(taskset -c 1)
  PINNING="server on core 0, loader on core 1 (taskset)"
else
  PIN_SERVER=() PIN_LOADER=()
  PINNING="no pinning: only $NCPU CPU"
  log "only $NCPU CPU: running without pinning"
fi

# ---------------------------------------------------------------- temp dir, cleanup, watchdog
TMP=$(mktemp -d "${CV_BENCH_TMP:-/var/tmp}/cv-compare.XXXXXX")
PIDS=()          # servers started here
LOADER_PID=""
WATCHDOG_PID=""

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

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  [ -n "$LOADER_PID" ] && stop_pid "$LOADER_PID"
  local p
  for p in "${PIDS[@]}"; do stop_pid "$p"; done
  [ -n "$WATCHDOG_PID" ] && kill "$WATCHDOG_PID" 2>/dev/null && wait "$WATCHDOG_PID" 2>/dev/null
  if [ "$KEEP" = 1 ]; then log "kept $TMP"; else rm -rf "$TMP"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "time budget of ${BUDGET_S}s exceeded (or SIGTERM): stopping"; exit 124' TERM

( trap 'kill "$sp" 2>/dev/null; exit 0' TERM
  sleep "$BUDGET_S" & sp=$!
  wait "$sp" && kill -TERM $$ 2>/dev/null ) &
WATCHDOG_PID=$!

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

# One TLS certificate for nginx and rclone: self-signed P-256 (the key type chunkvaultd generates).
CERT=$TMP/peer-cert.pem KEY=$TMP/peer-key.pem
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj /CN=127.0.0.1 -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" \
  -keyout "$KEY" -out "$CERT" 2>/dev/null || die "openssl could not make a certificate"

# ---------------------------------------------------------------- measurements
declare -A MIBS P50 P99 BUSY NOTE  # "peer,op,set" -> one value per run, space-separated
FAILED=0

# measure PEER URL CA MODE [USER PASSWORD]: runs every set against URL, records the results
measure() {
  local peer=$1 url=$2 ca=$3 mode=$4 user=${5:-} pass=${6:-} set n mib out rc
  local auth=()
  [ -n "$user" ] && auth=(--user "$user" --password "$pass")
  for set in "${SETS[@]}"; do
    read -r n mib <<<"$set"
    out=$TMP/$peer-$n-$mib-run$RUN.out
    local extra=()
    [ "$COLD" = 1 ] && extra=(--before-get "sync; echo 3 > /proc/sys/vm/drop_caches")
    sync -f "$TMP" 2>/dev/null || sync
    log "$peer: $n x $mib MiB, $CONNS connections (run $RUN of $RUNS)"
    set +e
    timeout --kill-after=10 "$LOAD_TIMEOUT_S" "${PIN_LOADER[@]}" "$LOADGEN" --url "$url" --cacert "$ca" \
      "${auth[@]}" --objects "$n" --size "${mib}M" --conns "$CONNS" --mode "$mode" --get \
      --timeout 120 --seed 42 "${extra[@]}" >"$out" 2>&1 &
    LOADER_PID=$!
    wait "$LOADER_PID"
    rc=$?
    LOADER_PID=""
    set -e
    { grep -v '^RESULT' "$out" || true; } | sed "s/^/  /" >&2
    if [ "$rc" != 0 ]; then
      log "$peer: loader exited with $rc (see above)"
      NOTE[$peer]="loader errors (exit $rc) in $n x $mib MiB, run $RUN: see the log above"
      FAILED=1
    fi
    local op line
    for op in upload restore; do
      line=$(grep "^RESULT op=$op " "$out" || true)
      [ -n "$line" ] || continue
      if [ "$(field errors "$line")" != 0 ]; then
        MIBS[$peer,$op,$set]+=" err"
      else
        MIBS[$peer,$op,$set]+=" $(field mib_s "$line")"
      fi
      P50[$peer,$op,$set]+=" $(field p50_ms "$line")"
      P99[$peer,$op,$set]+=" $(field p99_ms "$line")"
      BUSY[$peer]+=" $(awk -v c="$(field loader_cpu_s "$line")" -v s="$(field seconds "$line")" \
        'BEGIN{printf "%.0f", (s > 0 ? 100 * c / s : 0)}')"
    done
  done
}
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; }

enabled() { [[ ",$ONLY," == *",$1,"* ]]; }

# --- chunkvaultd: defaults (6 disk folders under its root, 4+2, O_DIRECT, fsync, SHA-256 check)
run_cv() {
  local root=$TMP/cv threads=$CV_THREADS
  mkdir -p "$root"
  "${PIN_SERVER[@]}" "$CVD" ${CV_BENCH_CV_CONFIG:+--config "$CV_BENCH_CV_CONFIG"} --root "$root" \
    --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --threads "$threads" >"$TMP/cv.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  local ep=$root/run/endpoints.json i
  for i in $(seq 300); do
    kill -0 "$pid" 2>/dev/null || { tail -20 "$TMP/cv.log" >&2; die "chunkvaultd exited at start-up"; }
    if [ -f "$ep" ] && python3 -c "import json,sys; sys.exit(json.load(open('$ep'))['pid'] != $pid)" 2>/dev/null; then
      break
    fi
    sleep 0.1
  done
  [ -f "$ep" ] || die "chunkvaultd wrote no $ep in 30 s"
  local agent admin ca keyfile
  read -r agent admin ca keyfile < <(python3 -c "import json; e=json.load(open('$ep')); print(e['agent'], e['admin'], e['ca'], e['admin_key_file'])")
  local key
  key=$(cat "$keyfile")
  local acct="" dev body
  # An active account with a quota far above what the run uploads (1 TiB); '{}' for builds
  # from before accounts had plans.
  for body in '{"plan_quota_bytes":1099511627776,"device_limit":10,"status":"active"}' '{}'; do
    acct=$(curl -sS --fail --max-time 10 --cacert "$ca" -X POST -H "Authorization: Bearer $key" \
      -H 'Content-Type: application/json' -d "$body" "$admin/admin/v1/accounts" 2>/dev/null |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])' 2>/dev/null) && break
  done
  [ -n "$acct" ] || die "chunkvaultd: cannot create an account through $admin/admin/v1/accounts"
  dev=$(curl -sS --fail-with-body --max-time 10 --cacert "$ca" -X POST -H "Authorization: Bearer $key" \
    -H 'Content-Type: application/json' -d '{"name":"bench","kind":"computer","append_only":false}' \
    "$admin/admin/v1/accounts/$acct/devices") || die "chunkvaultd: cannot create a device"
  local dev_id token
  read -r dev_id token < <(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(d["id"], d["token"])' "$dev")
  log "chunkvaultd pid $pid on $agent ($threads worker thread(s)), device $dev_id"
  measure cv "$agent/$dev_id/" "$ca" restic "$dev_id" "$token"
  stop_pid "$pid"
  rm -rf "$root"
}

# --- nginx: Debian package, one worker, WebDAV PUT, TLS
run_nginx() {
  command -v nginx >/dev/null || { NOTE[nginx]="not run: nginx is not installed (apt-get install nginx)"; return; }
  local dir=$TMP/nginx port
  mkdir -p "$dir/data" "$dir/client_body"
  port=$(free_port)
  local user_line=""
  [ "$(id -u)" = 0 ] && user_line="user root;"   # the worker must reach the 0700 temp folder
  sed -e "s|@DIR@|$dir|g" -e "s|@DATA@|$dir/data|g" -e "s|@PORT@|$port|g" \
    -e "s|@CERT@|$CERT|g" -e "s|@KEY@|$KEY|g" -e "s|@USER_LINE@|$user_line|g" \
    bench/peers/nginx.conf.in >"$dir/nginx.conf"
  "${PIN_SERVER[@]}" nginx -e "$dir/error.log" -p "$dir" -c "$dir/nginx.conf" >"$dir/stdout.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  if ! wait_https "https://127.0.0.1:$port/" "$CERT" "$pid"; then
    NOTE[nginx]="not run: nginx did not start ($(tail -3 "$dir/error.log" "$dir/stdout.log" 2>/dev/null | tr '\n' ' '))"
    stop_pid "$pid"
    return
  fi
  log "nginx pid $pid on https://127.0.0.1:$port/ (1 worker)"
  measure nginx "https://127.0.0.1:$port/" "$CERT" put
  stop_pid "$pid"
  rm -rf "$dir"
}

# --- rclone serve restic: Debian package, TLS, htpasswd, local directory
run_rclone() {
  command -v rclone >/dev/null || { NOTE[rclone]="not run: rclone is not installed (apt-get install rclone)"; return; }
  command -v htpasswd >/dev/null || { NOTE[rclone]="not run: htpasswd is missing (apt-get install apache2-utils)"; return; }
  local dir=$TMP/rclone port pass
  mkdir -p "$dir/data" "$dir/cache"
  : >"$dir/rclone.conf"
  pass=$(openssl rand -hex 16)
  htpasswd -cbB "$dir/htpasswd" bench "$pass" 2>/dev/null
  port=$(free_port)
  "${PIN_SERVER[@]}" rclone serve restic "$dir/data" --addr "127.0.0.1:$port" \
    --cert "$CERT" --key "$KEY" --htpasswd "$dir/htpasswd" \
    --config "$dir/rclone.conf" --cache-dir "$dir/cache" >"$dir/rclone.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  if ! wait_https "https://127.0.0.1:$port/" "$CERT" "$pid"; then
    NOTE[rclone]="not run: rclone did not start ($(tail -3 "$dir/rclone.log" | tr '\n' ' '))"
    stop_pid "$pid"
    return
  fi
  log "rclone pid $pid on https://127.0.0.1:$port/ ($(rclone version 2>/dev/null | head -1))"
  measure rclone "https://127.0.0.1:$port/" "$CERT" restic bench "$pass"
  stop_pid "$pid"
  rm -rf "$dir"
}

[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || die "--runs must be a positive number"
START=$(date +%s)
for RUN in $(seq "$RUNS"); do
  enabled cv && run_cv
  enabled nginx && run_nginx
  enabled rclone && run_rclone
done
ELAPSED=$(( $(date +%s) - START ))

# ---------------------------------------------------------------- table
# median of a space-separated list ("err" if any run had errors, "n/a" if none ran)
median() {
  local v=$1
  [ -n "${v// /}" ] || { echo n/a; return; }
  [[ " $v " == *" err "* ]] && { echo err; return; }
  tr ' ' '\n' <<<"$v" | sed '/^$/d' | sort -g | awk '{a[NR]=$1} END{ if (NR%2) print a[(NR+1)/2]; else printf "%.1f\n", (a[NR/2]+a[NR/2+1])/2 }'
}
range() {  # "min-max" of a list of numbers
  tr ' ' '\n' <<<"$1" | sed '/^$/d' | sort -g | awk 'NR==1{lo=$1} {hi=$1} END{printf "%s-%s", lo, hi}'
}
val() { median "${MIBS[$1,$2,$3]:-}"; }
cell() {  # median MiB/s, with min-max when there were several runs
  local v=${MIBS[$1,$2,$3]:-} m
  m=$(median "$v")
  if [ "$RUNS" -gt 1 ] && [[ "$m" =~ ^[0-9.]+$ ]]; then echo "$m ($(range "$v"))"; else echo "$m"; fi
}
ratio() {
  local a=$1 b=$2
  if [[ "$a" =~ ^[0-9.]+$ && "$b" =~ ^[0-9.]+$ ]] && awk "BEGIN{exit !($b > 0)}"; then
    awk "BEGIN{printf \"%.2f\", $a / $b}"
  else
    echo "n/a"
  fi
}
lat() {
  local v=${P50[$1,$2,$3]:-}
  [ -n "${v// /}" ] && printf '%s / %s' "$(median "$v")" "$(median "${P99[$1,$2,$3]}")" || echo "n/a"
}

mode_name=$([ -n "$CUSTOM_SETS" ] && echo "--sets $CUSTOM_SETS" || { [ "$QUICK" = 1 ] && echo "--quick" || echo "full"; })
echo
echo "### chunkvaultd vs nginx vs rclone serve restic ($mode_name)"
echo
echo "Machine: $NCPU CPU ($(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')), kernel $(uname -r),"
echo "temp data on $(df -T "$TMP" | awk 'NR==2{print $2, $1}'). $PINNING; $CONNS keep-alive TLS connections;"
echo "one loader (bench/loadgen, SHA-256 of every restored body checked); $RUNS run(s), each server started"
echo "afresh for each; total ${ELAPSED}s. MiB/s$([ "$RUNS" -gt 1 ] && echo ": median of the runs (min-max)"); ratios of the medians."
echo
echo "| workload | chunkvaultd MiB/s | nginx MiB/s | rclone MiB/s | chunkvaultd/nginx | chunkvaultd/rclone |"
echo "|---|---:|---:|---:|---:|---:|"
for op in upload restore; do
  for set in "${SETS[@]}"; do
    read -r n mib <<<"$set"
    c=$(val cv $op "$set") g=$(val nginx $op "$set") r=$(val rclone $op "$set")
    echo "| $op $n x $mib MiB | $(cell cv $op "$set") | $(cell nginx $op "$set") | $(cell rclone $op "$set") | $(ratio "$c" "$g") | $(ratio "$c" "$r") |"
  done
done
echo
echo "Latency per request, p50 / p99 ms$([ "$RUNS" -gt 1 ] && echo " (medians over the runs)"):"
echo
echo "| workload | chunkvaultd | nginx | rclone |"
echo "|---|---:|---:|---:|"
for op in upload restore; do
  for set in "${SETS[@]}"; do
    read -r n mib <<<"$set"
    echo "| $op $n x $mib MiB | $(lat cv $op "$set") | $(lat nginx $op "$set") | $(lat rclone $op "$set") |"
  done
done
echo
echo "- chunkvaultd: default configuration ($CV_THREADS worker threads, all on the server core); 6 disk"
echo "  folders on one file system, 4+2 erasure coding (1.5x bytes written), O_DIRECT, SHA-256 of each"
echo "  body verified, extents fdatasync'ed and the LMDB index committed before each 2xx."
echo "- nginx never fsyncs: a PUT is spooled to a temp file and renamed into place; its 2xx"
echo "  means the bytes are in the page cache. One worker process; client_body_buffer_size 1m"
echo "  (bench/peers/nginx.conf.in)."
echo "- rclone serve restic: local directory, htpasswd (bcrypt) authentication; it never fsyncs"
echo "  either (checked with strace: no fsync/fdatasync/sync_file_range). Go sees one CPU (taskset)."
if [ "$COLD" = 1 ]; then
  echo "- --cold: the page cache was dropped between each upload and its restore."
else
  echo "- Restores follow their upload at once: nginx and rclone serve them from the page cache;"
  echo "  chunkvaultd reads its shards with O_DIRECT from the disk. Run with --cold to drop the cache first."
fi
busy=""
for p in cv nginx rclone; do
  [ -n "${BUSY[$p]:-}" ] && busy+="${busy:+, }$p $(range "${BUSY[$p]}")%"
done
if [ -n "$busy" ]; then
  echo "- Loader core busy (CPU time / wall time, per server over the workloads): $busy;"
  echo "  near 100% the figure is the loader's limit (TLS, SHA-256, loopback TCP), not the server's."
fi
for p in cv nginx rclone; do
  if [ -n "${NOTE[$p]:-}" ]; then echo "- $p: ${NOTE[$p]}"; fi
done
exit "$FAILED"
