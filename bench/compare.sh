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
#   --sets:   other workloads, e.g. --sets 10x1,5x16,2000x64K (objects x size: MiB, or KiB with K)
#   --only:   a subset of the servers, e.g. --only cv,nginx
#
# Each run also measures the bound of an upload on this machine, pinned like the servers
# (bench/README.md, "The bound"), and prints it under the table:
#   CPU bound:   the same loader, with the same settings (sets, connections, credentials), against
#                build/bin/tls_sink on the server core: TLS receive, SHA-256, 4+2 stripes encoded
#                with ISA-L, XXH3 per shard, 200, nothing kept (the work no verifying 4+2 store
#                can skip). MiB/s of client bytes, per set; with the sink's CPU time / wall time
#                and the MiB it took per second of CPU time (its rate with a core to itself).
#   disk bound:  Debian fio writes 4+2-expanded bytes on the file system of the servers' data:
#                io_uring, O_DIRECT, sequential, 256 KiB blocks (the shard unit), iodepth 8, one
#                file per data directory (6), in parallel, an fdatasync every 16 MiB per file.
#                MiB/s written; divided by 1.5 it is in client bytes.
#   bound:       min(CPU bound, disk bound / 1.5), and chunkvaultd's upload MiB/s / bound.
#   null-disk:   chunkvaultd itself, same loader and pinning, with [storage] bench_discard_writes
#                (extent writes and syncs complete at once, nothing kept; uploads only): our own
#                code's CPU cost, as a ratio of the CPU bound.
#
# Needs the Debian packages nginx, rclone, apache2-utils (htpasswd), fio, openssl, curl, python3,
# util-linux (taskset); a missing peer is reported and left out of the table. Temporary data
# goes under ${CV_BENCH_TMP:-/var/tmp} (a real file system, not tmpfs) and is removed at the end.
# Every server started here is stopped on exit, and the whole run is bounded in time
# (CV_BENCH_BUDGET_S, default 600 s with --quick and 1200 s in full mode, build excluded).
# Exit status 1 when any loader run had errors (the table is printed all the same).
set -euo pipefail
BENCH_NAME=compare
. "$(dirname "$0")/lib/servers.sh"  # cd to the source tree, SRC, shared functions
. bench/lib/bound.sh                  # start_sink, disk_bound

usage() { sed -n '2,40p' "$BENCH_SELF" | sed 's/^# \{0,1\}//'; exit 2; }

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
    [[ "$s" =~ ^[0-9]+x[0-9]+K?$ ]] || { echo "compare.sh: bad --sets item $s" >&2; exit 2; }
    SETS+=("${s%x*} ${s#*x}")
  done
fi
# size_words SIZE: the loader's size argument and the table's label of a set's object size
# (a number of MiB, or of KiB with a K suffix).
size_words() {
  case $1 in
    *K) SIZE_ARG=$1; SIZE_LABEL="${1%K} KiB" ;;
    *) SIZE_ARG=${1}M; SIZE_LABEL="$1 MiB" ;;
  esac
}

bench_build tls_sink
[ "$NCPU" -ge 2 ] || log "only $NCPU CPU: running without pinning"
bench_init "$BUDGET_S"

# ---------------------------------------------------------------- measurements
declare -A MIBS P50 P99 BUSY NOTE  # "peer,op,set" -> one value per run, space-separated
FAILED=0
DISK=""        # disk bound MiB/s (fio), one value per run
SINK_BUSY=()   # per set index: the sink's CPU time / wall time %, one value per run
SINK_CPU=()    # per set index: MiB the sink took per second of its CPU time, one value per run
DISK_HOW=""

# upload_once PEER I: starts PEER, uploads set I once (no restore) and stops it; records the
# rate in MIBS[PEER,upload,set] and leaves the loader's RESULT line in LINE ("" after errors).
# Returns 1 when PEER did not start (NOTE[PEER] says why).
upload_once() {
  local peer=$1 set=${SETS[$2]} n mib out rc=0
  read -r n mib <<<"$set"; size_words "$mib"
  LINE=""
  if ! start_server "$peer"; then
    NOTE[$peer]=$SRV_NOTE
    return 1
  fi
  out=$TMP/$peer-$n-$mib-run$RUN.out
  log "$peer: $n x $SIZE_LABEL, uploads only, $CONNS connections (run $RUN of $RUNS)"
  run_loader "$out" "$n" "$SIZE_ARG" "$CONNS" || rc=$?
  stop_pid "$SRV_PID"  # tls_sink prints its RESULT line on SIGTERM
  SRV_PID=""
  stop_server
  LINE=$(grep "^RESULT op=upload " "$out" || true)
  if [ "$rc" != 0 ] || [ -z "$LINE" ] || [ "$(field errors "$LINE")" != 0 ]; then
    log "$peer: loader exited with $rc (see above)"
    NOTE[$peer]="loader errors (exit $rc) in $n x $SIZE_LABEL, run $RUN: see the log above"
    MIBS[$peer,upload,$set]+=" err"
    FAILED=1
    LINE=""
    return 0
  fi
  MIBS[$peer,upload,$set]+=" $(field mib_s "$LINE")"
}

# bound: the CPU bound (loader -> tls_sink, every set, as for the servers; recorded as the peer
# "sink"), the null-disk node (peer "cvnull") and the disk bound (fio), on the server core and
# the servers' file system
bound() {
  local i sink_line
  for i in "${!SETS[@]}"; do
    upload_once sink "$i" || break
    [ -n "$LINE" ] || continue
    BUSY[sink]+=" $(awk -v c="$(field loader_cpu_s "$LINE")" -v s="$(field seconds "$LINE")" \
      'BEGIN{printf "%.0f", (s > 0 ? 100 * c / s : 0)}')"
    sink_line=$(grep "^RESULT sink " "$SRV_LOG" || true)
    SINK_BUSY[$i]+=" $(awk -v c="$(field cpu_s "$sink_line")" -v s="$(field seconds "$LINE")" \
      'BEGIN{printf "%.0f", (s > 0 ? 100 * c / s : 0)}')"
    SINK_CPU[$i]+=" $(awk -v c="$(field cpu_s "$sink_line")" -v b="$(field bytes "$sink_line")" \
      'BEGIN{printf "%.1f", (c > 0 ? b / 1048576 / c : 0)}')"
  done
  for i in "${!SETS[@]}"; do
    upload_once cvnull "$i" || break
  done
  disk_bound "$TMP/fio-run$RUN.json"
  DISK_HOW=$DISK_NOTE
  if [ -n "$DISK_MIB_S" ]; then DISK+=" $DISK_MIB_S"; else NOTE[disk]=$DISK_NOTE; fi
}

# measure PEER: runs every set against the server just started, records the results
measure() {
  local peer=$1 set n mib out rc
  for set in "${SETS[@]}"; do
    read -r n mib <<<"$set"; size_words "$mib"
    out=$TMP/$peer-$n-$mib-run$RUN.out
    local extra=()
    [ "$COLD" = 1 ] && extra=(--before-get "sync; echo 3 > /proc/sys/vm/drop_caches")
    log "$peer: $n x $SIZE_LABEL, $CONNS connections (run $RUN of $RUNS)"
    rc=0
    run_loader "$out" "$n" "$SIZE_ARG" "$CONNS" --get "${extra[@]}" || rc=$?
    if [ "$rc" != 0 ]; then
      log "$peer: loader exited with $rc (see above)"
      NOTE[$peer]="loader errors (exit $rc) in $n x $SIZE_LABEL, run $RUN: see the log above"
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

# run PEER: starts it (or notes why not), measures, stops it
run() {
  if start_server "$1"; then
    measure "$1"
    stop_server
  else
    NOTE[$1]=$SRV_NOTE
  fi
}

enabled() { [[ ",$ONLY," == *",$1,"* ]]; }

[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || die "--runs must be a positive number"
START=$(date +%s)
for RUN in $(seq "$RUNS"); do
  for peer in cv nginx rclone; do
    enabled "$peer" && run "$peer"
  done
  bound
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
echo "Machine: $(machine_line)."
echo "$PINNING; $CONNS keep-alive TLS connections;"
echo "one loader (bench/loadgen, SHA-256 of every restored body checked); $RUNS run(s), each server started"
echo "afresh for each; total ${ELAPSED}s. MiB/s$([ "$RUNS" -gt 1 ] && echo ": median of the runs (min-max)"); ratios of the medians."
echo
echo "| workload | chunkvaultd MiB/s | nginx MiB/s | rclone MiB/s | chunkvaultd/nginx | chunkvaultd/rclone |"
echo "|---|---:|---:|---:|---:|---:|"
for op in upload restore; do
  for set in "${SETS[@]}"; do
    read -r n mib <<<"$set"; size_words "$mib"
    c=$(val cv $op "$set") g=$(val nginx $op "$set") r=$(val rclone $op "$set")
    echo "| $op $n x $SIZE_LABEL | $(cell cv $op "$set") | $(cell nginx $op "$set") | $(cell rclone $op "$set") | $(ratio "$c" "$g") | $(ratio "$c" "$r") |"
  done
done
expand=$(awk -v k="$BOUND_K" -v m="$BOUND_M" 'BEGIN{printf "%g", (k + m) / k}')
disk=$(median "$DISK")
disk_client=$([[ "$disk" =~ ^[0-9.]+$ ]] && awk -v d="$disk" -v e="$expand" 'BEGIN{printf "%.1f", d / e}' || echo "$disk")
echo
echo "The bound, same run$([ "$RUNS" -gt 1 ] && echo " (medians of $RUNS)"), pinned like the servers (bench/README.md, \"The bound\"):"
echo "CPU bound = the same loader against \`build/bin/tls_sink\` (TLS, SHA-256, ${BOUND_K}+${BOUND_M} encode, XXH3 per shard,"
echo "nothing kept), MiB/s of client bytes; the sink's CPU time / wall time, and the MiB it took per second of"
echo "its CPU time (what it would do with a core to itself: on a shared machine the CPU bound is lower);"
echo "disk bound = fio writing the ${expand}x expanded bytes, MiB/s written:"
echo "${DISK_HOW:-not run};"
echo "bound = min(CPU bound, disk bound / $expand);"
echo "null-disk node = chunkvaultd with [storage] bench_discard_writes (extents keep nothing), uploads only."
echo
echo "| workload | CPU bound MiB/s | sink CPU busy | sink MiB per CPU s | disk bound MiB/s | disk bound / $expand | bound | chunkvaultd upload | chunkvaultd / bound | null-disk node | null-disk / CPU bound |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for i in "${!SETS[@]}"; do
  set=${SETS[$i]}
  read -r n mib <<<"$set"; size_words "$mib"
  cpu=$(val sink upload "$set") c=$(val cv upload "$set")
  b=$(awk -v a="$cpu" -v d="$disk_client" 'BEGIN{
    an = (a ~ /^[0-9.]+$/); dn = (d ~ /^[0-9.]+$/)
    if (an && dn) print (a + 0 < d + 0 ? a : d); else if (an) print a; else if (dn) print d; else print "n/a" }')
  busy_cell=$(median "${SINK_BUSY[$i]:-}")
  [[ "$busy_cell" =~ ^[0-9.]+$ ]] && busy_cell+="%"
  echo "| upload $n x $SIZE_LABEL | $(cell sink upload "$set") | $busy_cell | $(median "${SINK_CPU[$i]:-}") | $disk | $disk_client | $b | $(cell cv upload "$set") | $(ratio "$c" "$b") | $(cell cvnull upload "$set") | $(ratio "$(val cvnull upload "$set")" "$cpu") |"
done
echo
echo "Latency per request, p50 / p99 ms$([ "$RUNS" -gt 1 ] && echo " (medians over the runs)"):"
echo
echo "| workload | chunkvaultd | nginx | rclone |"
echo "|---|---:|---:|---:|"
for op in upload restore; do
  for set in "${SETS[@]}"; do
    read -r n mib <<<"$set"; size_words "$mib"
    echo "| $op $n x $SIZE_LABEL | $(lat cv $op "$set") | $(lat nginx $op "$set") | $(lat rclone $op "$set") |"
  done
done
echo
echo "- chunkvaultd: default configuration (${CV_THREADS:-one worker thread per CPU it may run on: 1}, on the server core); 6 disk"
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
for p in cv nginx rclone sink; do
  [ -n "${BUSY[$p]:-}" ] && busy+="${busy:+, }$p $(range "${BUSY[$p]}")%"
done
if [ -n "$busy" ]; then
  echo "- Loader core busy (CPU time / wall time, per server over the workloads): $busy;"
  echo "  near 100% the figure is the loader's limit (TLS, SHA-256, loopback TCP), not the server's."
fi
for p in cv nginx rclone sink cvnull disk; do
  if [ -n "${NOTE[$p]:-}" ]; then echo "- $p: ${NOTE[$p]}"; fi
done
exit "$FAILED"
