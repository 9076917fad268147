# shellcheck shell=bash disable=SC2034
# bench/lib/curves.sh: the measurements of bench/run.sh, one function per curve (sourced by
# run.sh after bench/lib/servers.sh). Each records its values with
#   rec CURVE SERIES X RUN METRIC VALUE     (bench/results/data.tsv)
# and what a reader needs to redo it (commands, caveats) with `note CURVE TEXT`; the report
# (bench/report/report.py) computes min/median/max over the runs.

PEERS="cv nginx rclone"

# each_server_run CURVE FN: for every run and every peer, starts the peer, calls FN PEER RUN,
# stops the peer. A peer that cannot start is noted and left out.
each_server_run() {
  local curve=$1 fn=$2 run peer
  for run in $(seq "$RUNS"); do
    for peer in $PEERS; do
      if ! start_server "$peer"; then
        note "$curve" "$peer: $SRV_NOTE"
        continue
      fi
      "$fn" "$peer" "$run"
      stop_server
    done
  done
}

# load_point CURVE PEER X RUN N SIZE CONNS [loadgen args]: one loader run against the current
# server; records upload (and restore, with --get) MiB/s, p50 and p99.
load_point() {
  local curve=$1 peer=$2 x=$3 run=$4 n=$5 size=$6 conns=$7 out op line
  shift 7
  out=$TMP/$curve-$peer-$x-run$run.out
  log "$curve: $peer, $n x $size, $conns connections (run $run)"
  run_loader "$out" "$n" "$size" "$conns" "$@" ||
    { log "$curve: $peer: loader errors"; note "$curve" "$peer: loader errors at $x, run $run"; FAILED=1; }
  for op in upload restore; do
    line=$(loader_result "$out" "$op")
    [ -n "$line" ] || continue
    rec "$curve" "$peer" "$x" "$run" "${op}_mib_s" "$(field mib_s "$line")"
    rec "$curve" "$peer" "$x" "$run" "${op}_p50_ms" "$(field p50_ms "$line")"
    rec "$curve" "$peer" "$x" "$run" "${op}_p99_ms" "$(field p99_ms "$line")"
    rec "$curve" "$peer" "$x" "$run" "${op}_loader_busy" \
      "$(awk -v c="$(field loader_cpu_s "$line")" -v s="$(field seconds "$line")" 'BEGIN{printf "%.2f", (s > 0 ? c / s : 0)}')"
  done
}

objects_for() {  # objects of SIZE that make POINT_BYTES, at least $2
  local n=$((POINT_BYTES / $(bytes_of "$1")))
  echo $((n < $2 ? $2 : n))
}

# ---- 1. upload and restore MiB/s vs object size
size_point() {
  local peer=$1 run=$2 size
  for size in $SIZES; do
    load_point size "$peer" "$(bytes_of "$size")" "$run" "$(objects_for "$size" "$MIN_OBJECTS")" "$size" 4 --get
  done
}
curve_size() {
  has_time size $((RUNS * 60)) || return 0
  note size "command: loadgen --objects N --size SIZE --conns 4 --get (N x SIZE = $((POINT_BYTES / MIB)) MiB, at least $MIN_OBJECTS objects), each server started afresh for each run"
  each_server_run size size_point
}

# ---- 2. upload MiB/s and p99 vs concurrent connections (1 MiB objects)
conns_point() {
  local peer=$1 run=$2 c
  for c in $CONNS_LIST; do
    load_point conns "$peer" "$c" "$run" "$(objects_for 1M $((2 * c)))" 1M "$c" --seed "$((100 + c))"
  done
}
curve_conns() {
  has_time conns $((SMALL_RUNS * 45)) || return 0
  note conns "command: loadgen --objects N --size 1M --conns C (N = max($((POINT_BYTES / MIB)), 2C), uploads only, new names for every C)"
  RUNS=$SMALL_RUNS each_server_run conns conns_point
}

# ---- 4. peak RSS of chunkvaultd vs concurrent 16 MiB uploads (a fresh process per point)
curve_rss() {
  has_time rss $((SMALL_RUNS * 40)) || return 0
  note rss "command: chunkvaultd started afresh per point; loadgen --objects C --size 16M --conns C (uploads only); peak RSS = VmHWM of /proc/PID/status after the uploads"
  local run c hwm idle
  for run in $(seq "$SMALL_RUNS"); do
    for c in $RSS_CONNS; do
      start_server cv
      idle=$(awk '/^VmHWM/{print $2}' "/proc/$SRV_PID/status")
      load_point rss cv "$c" "$run" "$c" 16M "$c" --seed "$((200 + c))"
      hwm=$(awk '/^VmHWM/{print $2}' "/proc/$SRV_PID/status")
      rec rss cv "$c" "$run" peak_rss_mib "$(awk -v k="$hwm" 'BEGIN{printf "%.1f", k / 1024}')"
      rec rss cv "$c" "$run" start_rss_mib "$(awk -v k="$idle" 'BEGIN{printf "%.1f", k / 1024}')"
      stop_server
    done
  done
}

# ---- 6. degraded reads: restore MiB/s with 0, 1, m disk directories removed while serving
curve_degraded() {
  has_time degraded $((SMALL_RUNS * 30)) || return 0
  local m=2 run f n=$DEGRADED_OBJECTS
  note degraded "command: chunkvaultd (default: 6 disk folders, 4+2); loadgen --objects $n --size 16M --conns 4 --get; then for each further failed disk: mv DISK away && rm -rf it while the node serves, and loadgen ... --restore-only (same objects)"
  for run in $(seq "$SMALL_RUNS"); do
    start_server cv
    load_point degraded cv 0 "$run" "$n" 16M 4 --get
    for f in $(seq "$m"); do
      mv "$CV_ROOT/disks/d$((f - 1))" "$CV_ROOT/gone$f" && rm -rf "$CV_ROOT/gone$f"
      load_point degraded cv "$f" "$run" "$n" 16M 4 --restore-only
    done
    local failed
    failed=$(grep -c '"disk_failed"' "$TMP/cv.log" || true)
    rec degraded cv "$m" "$run" disks_marked_failed "$failed"
    stop_server
  done
}

# ---- 7. restic backup and restore of one generated data set (wall time)
restic_timed() {  # restic_timed SECONDS_VAR restic args...: runs restic on the loader core
  local var=$1 t0 t1
  shift
  t0=$(date +%s.%N)
  timeout "$LOAD_TIMEOUT_S" "${PIN_LOADER[@]}" restic --no-cache -q "$@" >>"$TMP/restic.log" 2>&1 ||
    { log "restic $* failed: $(tail -3 "$TMP/restic.log")"; return 1; }
  t1=$(date +%s.%N)
  printf -v "$var" '%s' "$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b - a}')"
}
restic_point() {  # restic_point SERIES RUN REPO [--cacert CA]
  local series=$1 run=$2 repo=$3 backup_s restore_s target=$TMP/restic-restore
  shift 3
  export RESTIC_PASSWORD=bench-password
  restic_timed init_s -r "$repo" "$@" init || return 1
  restic_timed backup_s -r "$repo" "$@" backup "$TMP/restic-data" || return 1
  rm -rf "$target"
  restic_timed restore_s -r "$repo" "$@" restore latest --target "$target" || return 1
  if ! diff -rq "$TMP/restic-data" "$target$TMP/restic-data" >/dev/null; then
    note restic "$series: the restored tree differs from the data set (run $run)"
    FAILED=1
  fi
  rm -rf "$target"
  rec restic "$series" backup "$run" seconds "$backup_s"
  rec restic "$series" restore "$run" seconds "$restore_s"
}
restic_server_point() {
  local peer=$1 run=$2 hostpath
  [ "$peer" = nginx ] && return 0  # nginx is not a restic REST server
  hostpath=${SRV_URL#https://}
  restic_point "$peer" "$run" "rest:https://$SRV_USER:$SRV_PASS@$hostpath" --cacert "$SRV_CA"
}
curve_restic() {
  command -v restic >/dev/null || { note restic "Skipped: restic is not installed."; return 0; }
  has_time restic $((SMALL_RUNS * (30 + RESTIC_MIB / 4))) || return 0
  log "restic: generating a $RESTIC_MIB MiB data set"
  python3 - "$TMP/restic-data" "$RESTIC_MIB" <<'EOF'
import os, random, sys
root, total = sys.argv[1], int(sys.argv[2]) << 20
rng = random.Random(8)
done = i = 0
while done < total:
    # a backup-like mix: many small files, some large ones (incompressible bytes)
    size = rng.randint(1 << 10, 64 << 10) if rng.random() < 0.8 else rng.randint(1 << 20, 8 << 20)
    size = min(size, total - done)
    d = os.path.join(root, "dir%02d" % (i % 16))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "file%05d" % i), "wb") as f:
        f.write(rng.randbytes(size))
    done += size
    i += 1
print(i, "files")
EOF
  note restic "data set: $RESTIC_MIB MiB of random bytes in $(find "$TMP/restic-data" -type f | wc -l) files (80% 1-64 KiB, 20% 1-8 MiB); restic $(restic version | awk '{print $2}') --no-cache on the loader core: init, backup DIR, restore latest --target T (timed: backup and restore; the restored tree is compared with diff -r)"
  local run
  PEERS="cv rclone" RUNS=$SMALL_RUNS each_server_run restic restic_server_point
  for run in $(seq "$SMALL_RUNS"); do
    restic_point local "$run" "$TMP/restic-local-$run"
    rm -rf "$TMP/restic-local-$run"
  done
  rm -rf "$TMP/restic-data"
}

# ---- 3. the index alone: insert rate, lookup p50/p99 and data.mdb bytes per object vs objects
# index_step SERIES DIR PREV N [index_bench flags]: PREV -> N objects if the budget allows
# (at the insert rate of the last step); its RESULT line -> INDEX_LINE
INDEX_RATE=20000  # objects/s assumed before the first step
index_step() {
  local series=$1 dir=$2 prev=$3 n=$4 batch=$5 out
  shift 5
  has_time index $(( (n - prev) / INDEX_RATE + 10 )) "the $n-object step ($series)" || return 1
  out=$TMP/index-$series-$n.out
  log "index: $series, $prev -> $n objects"
  "${PIN_SERVER[@]}" "$BIN/index_bench" "$dir" "$n" "$INDEX_LOOKUPS" "$batch" --start "$prev" "$@" \
    >"$out" 2>&1 || { cat "$out" >&2; return 1; }
  INDEX_LINE=$(grep '^RESULT index' "$out")
  INDEX_RATE=$(awk -v r="$(field insert_per_s "$INDEX_LINE")" 'BEGIN{r = int(r); print (r > 1000 ? r : 1000)}')
}

curve_index() {
  local steps=$INDEX_STEPS last avail n prev=0 metric
  last=${steps##*,}
  # data.mdb takes ~1.1 KB per object, twice (alone, then end to end): scale the steps to a
  # third of the free space
  avail=$(df -B1 --output=avail "$TMP" | tail -1)
  if [ $((last * 2200)) -gt $((avail / 3)) ]; then
    steps=$(tr ',' '\n' <<<"$steps" | awk -v max=$((avail / 6600)) '$1 <= max' | paste -sd,)
    note index "Scaled to the disk: ${last} objects need about $((last * 2200 >> 30)) GiB and $((avail >> 30)) GiB are free; steps kept: ${steps:-none}."
  fi
  note index "command: index_bench DIR N $INDEX_LOOKUPS 1000 --start PREV for each step N of $steps (batches of 1000 objects per durable commit; each lookup its own read transaction; pinned to core 0; one run)"
  for n in ${steps//,/ }; do
    index_step lmdb "$TMP/index-bench" "$prev" "$n" 1000 || break
    for metric in insert_per_s lookup_p50_us lookup_p99_us bytes_per_object; do
      rec index lmdb "$n" 1 "$metric" "$(field "$metric" "$INDEX_LINE")"
    done
    prev=$n
  done
  rm -rf "$TMP/index-bench"
  index_head "$steps"
}

# The same steps end to end: a device of chunkvaultd filled by index_bench --device while the
# node is stopped, then HEAD of random stored names through HTTPS (loadgen --head-names).
index_head() {
  local steps=$1 prev=0 n line
  printf '[scrub]\ninterval_s = 0\n[jobs]\ncompact_interval_s = 0\n' >"$TMP/cv-head.toml"
  note index "end to end: chunkvaultd (scrub and compaction off: the records point at no shards) with one device filled by index_bench \$CV_ROOT/index N $INDEX_LOOKUPS 20000 --start PREV --device DEV --names FILE while stopped, then loadgen --conns 4 --head-names FILE ($INDEX_LOOKUPS HEADs of random stored names)"
  start_server cv "$TMP/cv-head.toml"
  for n in ${steps//,/ }; do
    stop_pid "$SRV_PID"
    index_step http "$CV_ROOT/index" "$prev" "$n" 20000 --device "$SRV_USER" --names "$TMP/names" || break
    prev=$n
    restart_cv
    load_point index cv "$n" 1 0 0 4 --head-names "$TMP/names"
    line=$(loader_result "$TMP/index-cv-$n-run1.out" head)
    rec index cv "$n" 1 head_p50_ms "$(field p50_ms "$line")"
    rec index cv "$n" 1 head_p99_ms "$(field p99_ms "$line")"
  done
  stop_server
}

# ---- 5. erasure profiles: codec vs bare ISA-L, engine ingest and bytes written per client byte
curve_ec() {
  local profiles="4+2 6+3 8+3 10+4" p out line k m
  has_time ec $((4 * (INGEST_OBJECTS * INGEST_ROUNDS * 2 + 10))) || return 0
  note ec "command: ec_bench $EC_SECONDS K+M (1 MiB shards, 3 alternated runs) and ingest_bench DIR $INGEST_OBJECTS $INGEST_ROUNDS direct 4 K+M (16 MiB objects, 4 concurrent durable Puts, K+M disk folders on one file system vs a plain sequential write of the same expanded bytes); not pinned (both cores)"
  for p in $profiles; do
    k=${p%+*} m=${p#*+}
    out=$TMP/ec-$k-$m.out
    log "ec: $p"
    "$BIN/ec_bench" "$EC_SECONDS" "$p" >"$out" 2>&1 || { cat "$out" >&2; return 1; }
    while read -r line; do
      rec ec "$p" "$k" "$(field run "$line")" codec_mib_s "$(field codec_mib_s "$line")"
      rec ec "$p" "$k" "$(field run "$line")" bare_mib_s "$(field bare_mib_s "$line")"
    done < <(grep '^RESULT ec' "$out")
    out=$TMP/ingest-$k-$m.out
    "$BIN/ingest_bench" "$TMP/ingest" "$INGEST_OBJECTS" "$INGEST_ROUNDS" direct 4 "$p" >"$out" 2>&1 ||
      { cat "$out" >&2; return 1; }
    while read -r line; do
      for metric in engine_mb_s raw_mb_s written_per_byte; do
        rec ingest "$p" "$k" "$(field round "$line")" "$metric" "$(field "$metric" "$line")"
      done
    done < <(grep '^RESULT ingest' "$out")
  done
}

# ---- micro-benchmarks for the headline: device purge and courier images
curve_micro() {
  has_time micro 90 || return 0
  local out=$TMP/purge.out line
  note micro "purge: purge_bench DIR $PURGE_ARGS; courier: courier_bench DIR $COURIER_ARGS ${COURIER_TARGET:-/dev/shm} (not pinned)"
  log "micro: purge_bench $PURGE_ARGS"
  # shellcheck disable=SC2086
  "$BIN/purge_bench" "$TMP/purge" $PURGE_ARGS >"$out" 2>&1 || { cat "$out" >&2; return 1; }
  rec micro purge 0 1 objects_per_s "$(sed -n 's/^purge small: .* = \([0-9.]*\) objects\/s/\1/p' "$out")"
  rec micro purge 0 1 p99_ratio "$(sed -n 's/^ratio p99 during\/without: \([0-9.]*\).*/\1/p' "$out")"
  out=$TMP/courier.out
  log "micro: courier_bench $COURIER_ARGS"
  # shellcheck disable=SC2086
  "$BIN/courier_bench" "$TMP/courier" $COURIER_ARGS "${COURIER_TARGET:-/dev/shm}" >"$out" 2>&1 ||
    { cat "$out" >&2; return 1; }
  # round lines: round, image bytes, courier MB/s, read MB/s, ratio, write MB/s, ratio,
  # sha256 MB/s, bound (sha256/read: the highest ratio a job hashing its image can reach)
  awk '$1 ~ /^[0-9]+$/ && NF == 9 {print $1, $3, $4, $5, $9}' "$out" | while read -r r c rd ratio b; do
    rec micro courier 0 "$r" courier_mb_s "$c"
    rec micro courier 0 "$r" read_mb_s "$rd"
    rec micro courier 0 "$r" ratio "$ratio"
    rec micro courier 0 "$r" bound "$b"
  done
}
