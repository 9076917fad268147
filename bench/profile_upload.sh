#!/usr/bin/env bash
# bench/profile_upload.sh [real|null] [OBJECTS] [SIZE]: perf profile of chunkvaultd's uploads.
# Starts a fresh chunkvaultd (default configuration, or CV_THREADS worker threads; `null` adds
# [storage] bench_discard_writes, the null-disk node) pinned to core 0, records it with
# `perf record -F 2999 -g` while build/bin/loadgen (core 1) uploads OBJECTS x SIZE (default
# 200 x 4M) over 4 connections, then prints the share of its samples per shared object (perf
# report --sort dso), the CPU per MiB by kind of work (bench/profile_split.py) and what the
# commit thread did meanwhile (/metrics: groups, uploads per group, time in syncs and commits).
# The perf data stays in ${CV_BENCH_TMP:-/var/tmp}/cvprof-MODE.data. Needs linux-perf, curl.
set -euo pipefail
MODE=${1:-real} OBJECTS=${2:-200} SIZE=${3:-4M}
cd "$(dirname "$0")/.."
B=$PWD/build/bin
T=${CV_BENCH_TMP:-/var/tmp}
R=$T/cvprof-$MODE
command -v perf >/dev/null || { echo "profile_upload: perf is missing (apt-get install linux-perf)" >&2; exit 1; }
rm -rf "$R"
mkdir -p "$R"
CFG=()
if [ "$MODE" = null ]; then
  printf '[storage]\nbench_discard_writes = true\n' >"$R.toml"
  CFG=(--config "$R.toml")
fi
taskset -c 0 "$B/chunkvaultd" "${CFG[@]}" --root "$R" --listen 127.0.0.1:0 \
  --admin-listen 127.0.0.1:0 ${CV_THREADS:+--threads "$CV_THREADS"} >"$R.log" 2>&1 &
PID=$!
trap 'kill "$PID" 2>/dev/null || true; rm -rf "$R"' EXIT
for _ in $(seq 100); do [ -f "$R/run/endpoints.json" ] && break; sleep 0.1; done
read -r AGENT ADMIN CA KEYFILE MTOKEN < <(python3 -c "import json; e=json.load(open('$R/run/endpoints.json')); print(e['agent'], e['admin'], e['ca'], e['admin_key_file'], e['metrics_token_file'])")
KEY=$(cat "$KEYFILE")
admin() { curl -sS --fail --max-time 10 --cacert "$CA" -X POST -H "Authorization: Bearer $KEY" -d "$2" "$ADMIN/admin/v1/$1"; }
ACCT=$(admin accounts '{"plan_quota_bytes":1099511627776,"device_limit":10,"status":"active"}' |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
read -r USER_ID TOKEN < <(admin "accounts/$ACCT/devices" '{"name":"p","kind":"computer","append_only":false}' |
  python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["id"], d["token"])')
# The commit thread's counters: groups jobs sync_seconds index_seconds.
commits() {
  curl -sS --fail --max-time 10 --cacert "$CA" -H "Authorization: Bearer $(cat "$MTOKEN")" "$AGENT/metrics" |
    awk '/^chunkvault_commit_groups_total /{g=$2} /^chunkvault_commit_jobs_total /{j=$2}
         /^chunkvault_commit_seconds_total\{phase="sync"\}/{s=$2} /^chunkvault_commit_seconds_total\{phase="index"\}/{i=$2}
         END{print g+0, j+0, s+0, i+0}'
}
read -r G0 J0 S0 I0 < <(commits)
perf record -F 2999 -g -p "$PID" -o "$R.data" 2>"$R.perf.log" &
PERF=$!
sleep 0.5
timeout 300 taskset -c 1 "$B/loadgen" --url "$AGENT/$USER_ID/" --cacert "$CA" --user "$USER_ID" \
  --password "$TOKEN" --objects "$OBJECTS" --size "$SIZE" --conns 4 --mode restic --seed 7 |
  grep '^RESULT'
kill -INT "$PERF"
wait "$PERF" || true
read -r G1 J1 S1 I1 < <(commits)
python3 -c "
g, j, s, i = $G1 - $G0, $J1 - $J0, $S1 - $S0, $I1 - $I0
if g > 0:
    print(f'commit thread: {g:.0f} groups, {j / g:.2f} jobs per group, per group {1000 * s / g:.2f} ms in '
          f'fdatasyncs + {1000 * i / g:.2f} ms in the index commit ({s:.2f} s + {i:.2f} s in all)')
"
perf report -i "$R.data" --no-children -g none --sort dso --stdio 2>/dev/null | grep '%' | head -12
MIB=$(python3 -c "
s = '$SIZE'.upper(); u = {'K': 1 / 1024, 'M': 1, 'G': 1024}
print($OBJECTS * (float(s[:-1]) * u[s[-1]] if s[-1] in u else float(s) / 2**20))")
perf script -i "$R.data" -F tid,ip,sym,dso -G 2>/dev/null | python3 bench/profile_split.py "$MIB"
