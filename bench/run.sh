#!/usr/bin/env bash
# bench/run.sh: the whole performance report in one command. Installs what is missing
# (deploy/install-deps.sh --bench: nginx, rclone, apache2-utils, gnuplot), builds in Release,
# runs every benchmark and writes bench/results/REPORT.md, the PNG plots it links and the raw
# data (data.tsv), all from one run on this machine.
#
#   bench/run.sh [--quick] [--budget SECONDS] [--curves LIST] [--keep]
#
#   --quick:   small counts, 1-2 runs per point, under 5 minutes on 2 cores (build excluded)
#   --budget:  time budget in seconds (default 270 with --quick, 2400 in full mode); a curve
#              that would not fit in what is left is skipped and the report says so, and a
#              watchdog stops the run 120 s past the budget (the report is still written)
#   --curves:  a subset, comma-separated, in this order by default: micro,size,ec,rss,conns,
#              degraded,restic,index (the index curve last: its steps stop where the budget ends)
#   --keep:    keep the temporary folder (logs, loader outputs)
#
# Servers (chunkvaultd, nginx, rclone serve restic) run on 127.0.0.1 over TLS, one at a time,
# pinned to core 0 with the loader (build/bin/loadgen) or the restic client on core 1; they are
# started and stopped by bench/lib/servers.sh (shared with bench/compare.sh). Temporary data
# goes under ${CV_BENCH_TMP:-/var/tmp} and is removed at the end. CV_BENCH_RESULTS=DIR writes
# the results elsewhere than bench/results.
set -euo pipefail
BENCH_NAME=run
. "$(dirname "$0")/lib/servers.sh"  # cd to the source tree, SRC, shared functions

usage() { sed -n '2,21p' "$BENCH_SELF" | sed 's/^# \{0,1\}//'; exit 2; }

QUICK=0 KEEP=0 BUDGET_ARG="" CURVES="micro,size,ec,rss,conns,degraded,restic,index"
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --budget) BUDGET_ARG="$2"; shift ;;
    --curves) CURVES="$2"; shift ;;
    --keep) KEEP=1 ;;
    -h|--help) usage ;;
    *) echo "run.sh: unknown argument $1" >&2; usage ;;
  esac
  shift
done

OUT=${CV_BENCH_RESULTS:-$SRC/bench/results}
MIB=$((1 << 20))
if [ "$QUICK" = 1 ]; then
  MODE=quick
  RUNS=2                          # runs of the size curve (servers started afresh each run)
  SMALL_RUNS=1                    # runs of the other server curves
  POINT_BYTES=$((24 * MIB))       # client bytes per point of the size and connection curves
  MIN_OBJECTS=2                   # objects per point of the size curve, at least
  SIZES="64K 1M 4M 16M 64M"
  CONNS_LIST="1 2 4 8 16 64"
  RSS_CONNS="1 4 16 64"
  DEGRADED_OBJECTS=8              # x 16 MiB
  RESTIC_MIB=32
  INDEX_STEPS="100000,300000"
  INDEX_LOOKUPS=5000
  EC_SECONDS=0.3 INGEST_OBJECTS=6 INGEST_ROUNDS=1
  PURGE_ARGS="5000 4 3 4"         # small objects, 16 MiB objects, seconds of load, writers
  COURIER_ARGS="6 1"              # 16 MiB objects, rounds
  BUDGET_S=${BUDGET_ARG:-270}
else
  MODE=full
  RUNS=3
  SMALL_RUNS=3
  POINT_BYTES=$((256 * MIB))
  MIN_OBJECTS=4
  SIZES="64K 1M 4M 16M 64M"
  CONNS_LIST="1 2 4 8 16 64"
  RSS_CONNS="1 2 4 8 16 32 64"
  DEGRADED_OBJECTS=32
  RESTIC_MIB=256
  INDEX_STEPS="1000000,3000000,10000000"
  INDEX_LOOKUPS=20000
  EC_SECONDS=1 INGEST_OBJECTS=16 INGEST_ROUNDS=3
  PURGE_ARGS="50000 16 10 4"
  COURIER_ARGS="32 3"
  BUDGET_S=${BUDGET_ARG:-2400}
fi

bench_build ec_bench ingest_bench purge_bench courier_bench index_bench
command -v gnuplot >/dev/null || die "gnuplot is missing (deploy/install-deps.sh --bench installs it)"
command -v restic >/dev/null || log "restic is missing: the restic curve will be skipped"
bench_init $((BUDGET_S + 120))
mkdir -p "$OUT"
rm -f "$OUT"/*.png "$OUT"/*.dat
DATA=$OUT/data.tsv NOTES=$OUT/notes.tsv
printf 'curve\tseries\tx\trun\tmetric\tvalue\n' >"$DATA"
: >"$NOTES"
FAILED=0

rec() { printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$DATA"; }  # curve series x run metric value
note() { printf '%s\t%s\n' "$1" "$2" >>"$NOTES"; }          # curve text (commands, caveats)

# The report is written whatever happens (budget exceeded, a failed curve).
bench_exit_hook() {
  note meta "elapsed_s=$(elapsed_s)"
  python3 bench/report/report.py --results "$OUT" --mode "$MODE" \
    --budget "$BUDGET_S" --machine "$(machine_line)" --pinning "$PINNING" \
    --commit "$(git -C "$SRC" describe --always --dirty 2>/dev/null || echo unknown)"
}

# has_time CURVE SECONDS [WHAT]: whether the curve (or WHAT of it) fits, by its estimated
# duration, in what the budget has left
has_time() {
  local left=$((BUDGET_S - $(elapsed_s))) what=${3:-this curve}
  if [ "$left" -lt "$2" ]; then
    log "$1: $what skipped, ${left}s of the budget left and it needs about $2 s"
    note "$1" "Skipped $what: ${left} s of the ${BUDGET_S} s budget were left and it needs about $2 s."
    return 1
  fi
}

# loader_result OUT OP: the RESULT line of phase OP, empty if it had errors or did not run
loader_result() {
  local line
  line=$(grep "^RESULT op=$2 " "$1" || true)
  [ -n "$line" ] && [ "$(field errors "$line")" = 0 ] && echo "$line"
  return 0
}

bytes_of() { numfmt --from=iec "$1"; }

# ---------------------------------------------------------------- curves
. bench/lib/curves.sh

START_CURVES=$(date +%s)
for curve in ${CURVES//,/ }; do
  "curve_$curve" || { log "curve $curve failed"; note "$curve" "This curve failed: see the log of the run."; FAILED=1; }
done
log "all curves done in $(( $(date +%s) - START_CURVES )) s"
exit "$FAILED"
