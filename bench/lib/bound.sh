# shellcheck shell=bash disable=SC2034
# bench/lib/bound.sh: sourced after bench/lib/servers.sh (not run on its own). The two halves of
# the bound an upload of a 4+2 store that verifies and syncs can reach on this machine, pinned
# like the servers (bench/README.md, "The bound"):
#   start_sink                   (through start_server sink) build/bin/tls_sink, the CPU bound:
#                                TLS receive, SHA-256, 4+2 encode, XXH3 per shard, nothing kept.
#                                Sets SRV_PID, SRV_URL, SRV_CA, SRV_MODE=restic and credentials
#                                (the sink ignores them; the loader sends what it sends to
#                                chunkvaultd). Its RESULT line is in $SRV_LOG once stopped.
#   disk_bound OUT               the disk bound: Debian fio writes the 4+2-expanded bytes,
#                                sequentially, io_uring, O_DIRECT (buffered when the file system
#                                refuses O_DIRECT), block size = the shard unit, iodepth 8, one
#                                file per data directory (k+m), all in parallel, an fdatasync
#                                every 16 MiB per file. Sets DISK_MIB_S (aggregate write MiB/s,
#                                empty on failure) and DISK_NOTE (how it ran, or why it failed).
# k, m and the shard unit are chunkvaultd's defaults (common/config.h); CV_BENCH_FIO_MIB is
# each file's size (default 128 MiB, a multiple of 16), CV_BENCH_FIO_S a cap on fio's run time
# (default 60 s).

BOUND_K=4 BOUND_M=2
BOUND_UNIT=$((256 * 1024))  # [storage] shard_unit_bytes
BOUND_SYNC_BYTES=$((16 << 20))
FIO_MIB=${CV_BENCH_FIO_MIB:-128}
FIO_S=${CV_BENCH_FIO_S:-60}

# --- tls_sink: the CPU bound, on the server core like every server
start_sink() {
  local out=$TMP/sink.out i
  SRV_LOG=$out
  : >"$out"
  "${PIN_SERVER[@]}" "$BIN/tls_sink" --cert "$CERT" --key "$KEY" --listen 127.0.0.1:0 \
    --k "$BOUND_K" --m "$BOUND_M" --shard-unit "$BOUND_UNIT" >"$out" 2>&1 &
  SRV_PID=$!
  PIDS+=("$SRV_PID")
  for i in $(seq 200); do
    SRV_URL=$(sed -n 's/^LISTEN //p' "$out")
    [ -n "$SRV_URL" ] && break
    kill -0 "$SRV_PID" 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$SRV_URL" ]; then
    SRV_NOTE="not run: tls_sink did not start ($(tail -3 "$out" | tr '\n' ' '))"
    stop_server
    return 1
  fi
  SRV_CA=$CERT SRV_MODE=restic SRV_USER=bench SRV_PASS=unused
  log "tls_sink pid $SRV_PID on $SRV_URL (${BOUND_K}+${BOUND_M}, shard unit $BOUND_UNIT)"
}

# --- fio: the disk bound, on the file system the servers use
fio_job() {  # fio_job DIRECT: the job file on stdout
  local i
  cat <<EOF
[global]
ioengine=io_uring
direct=$1
rw=write
bs=$BOUND_UNIT
iodepth=8
size=${FIO_MIB}m
fdatasync=$((BOUND_SYNC_BYTES / BOUND_UNIT))
end_fsync=1
runtime=$FIO_S
EOF
  for i in $(seq 0 $((BOUND_K + BOUND_M - 1))); do
    printf '[d%d]\nfilename=%s/fio/d%d/fio.dat\n' "$i" "$TMP" "$i"
  done
}

disk_bound() {
  local out=$1 direct=1 err
  DISK_MIB_S="" DISK_NOTE=""
  if ! command -v fio >/dev/null; then
    DISK_NOTE="not run: fio is not installed (apt-get install fio)"
    return 0
  fi
  (( BOUND_SYNC_BYTES % BOUND_UNIT == 0 && (FIO_MIB << 20) % BOUND_SYNC_BYTES == 0 )) ||
    die "CV_BENCH_FIO_MIB must be a multiple of 16"
  for direct in 1 0; do
    rm -rf "$TMP/fio"
    mkdir -p $(seq -f "$TMP/fio/d%g" 0 $((BOUND_K + BOUND_M - 1)))
    fio_job "$direct" >"$out.job"
    log "disk bound: fio, $((BOUND_K + BOUND_M)) files x $FIO_MIB MiB, direct=$direct"
    if "${PIN_SERVER[@]}" fio --output-format=json --output="$out" "$out.job" 2>"$out.err"; then
      break
    fi
    err=$(grep -v '^$' "$out.err" | head -2 | tr '\n' ' ')
    if [ "$direct" = 1 ]; then
      log "fio with O_DIRECT failed ($err): buffered writes instead"
      DISK_NOTE="O_DIRECT refused ($err): buffered writes (each still fdatasync'ed); "
    else
      DISK_NOTE+="fio failed: $err"
      rm -rf "$TMP/fio"
      return 0
    fi
  done
  rm -rf "$TMP/fio"
  # Aggregate: every file's bytes over the longest file's write time.
  DISK_MIB_S=$(python3 - "$out" <<'EOF'
import json, sys
text = open(sys.argv[1]).read()
doc = json.loads(text[text.index("{"):])  # fio may print notes before the JSON
jobs = doc["jobs"]
total = sum(j["write"]["io_bytes"] for j in jobs)
ms = max(j["write"]["runtime"] for j in jobs)
print("%.1f" % (total / 1048576 / (ms / 1000)) if ms > 0 else "")
EOF
  ) || DISK_MIB_S=""
  [ -n "$DISK_MIB_S" ] || DISK_NOTE+="no write rate in fio's output $out"
  DISK_NOTE+="io_uring, $([ "$direct" = 1 ] && echo O_DIRECT || echo buffered), $((BOUND_K + BOUND_M)) files x $FIO_MIB MiB, bs $((BOUND_UNIT / 1024)) KiB, iodepth 8, fdatasync every $((BOUND_SYNC_BYTES >> 20)) MiB"
}
