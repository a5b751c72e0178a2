#!/usr/bin/env bash
# By-hand benchmark of a job's live output (issue 13; not a test): many
# followers of one job on GET /api/v1/jobs/{id}/output while its program
# appends chunks through /set-job-status/.
#
#   bash scripts/bench-follow.sh [embedded|redis|redis2] [FOLLOWERS] [CHUNKS] [INTERVAL_MS] [PREFILL_BYTES]
#                                 (default: embedded 1000 50 100 0)
#
#   embedded  one service on the embedded store
#   redis     one service on its own redis-server
#   redis2    two replicas on one redis-server: the followers on replica B,
#             the job and its chunks on replica A (the cross-replica path)
#
# Builds the release binary and examples/follow_bench.rs, starts what the
# mode needs on free loopback ports (process launcher; the fake ansible with
# inventory `hang-follow-bench` reports `running`, then sleeps), registers
# the app through /set-available-apps/, starts its job through /app-deploy/,
# then runs the example: FOLLOWERS raw HTTP/1.1 followers (viewer token),
# CHUNKS numbered chunks posted every INTERVAL_MS with a callback token it
# mints from the same CD_SIGNING_KEY, then a final `success`. With
# PREFILL_BYTES, that much output is appended before the followers connect
# (each of them receives it first). It prints the deliveries received
# against expected, the delay from each POST to each follower
# (p50/p90/p99/max) and the followed service's VmRSS/VmHWM sampled while the
# followers are connected and at the end. Everything it starts (services,
# redis-server, the job's program and its process group) is stopped by PID
# on exit. It installs nothing.
#
# CD_MAX_CONNECTIONS (default 1024) caps open connections: the followers,
# the poster and the script's own requests must fit. The script raises it
# only when FOLLOWERS + 16 would not fit, and says so; a CD_MAX_CONNECTIONS
# set by the caller is kept as it is.
#
# BENCH_KEEP_LOGS=DIR copies the service, redis and example logs there on exit.
#
# Targets: every chunk to every follower, p99 < 200 ms, RSS < 64 MiB.
# Note: the followers run on the same machine and take CPU from the service.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
mode=${1:-embedded}
followers=${2:-1000}
chunks=${3:-50}
interval_ms=${4:-100}
prefill_bytes=${5:-0}
case "$mode" in
  embedded | redis | redis2) ;;
  *) echo "usage: $0 [embedded|redis|redis2] [FOLLOWERS] [CHUNKS] [INTERVAL_MS] [PREFILL_BYTES]" >&2; exit 2 ;;
esac
for number in "$followers" "$chunks" "$interval_ms"; do
  if ! [[ "$number" =~ ^[0-9]+$ ]] || ((number < 1)); then
    echo "usage: $0 [embedded|redis|redis2] [FOLLOWERS] [CHUNKS] [INTERVAL_MS] [PREFILL_BYTES]" >&2
    exit 2
  fi
done
if ! [[ "$prefill_bytes" =~ ^[0-9]+$ ]]; then
  echo "usage: $0 [embedded|redis|redis2] [FOLLOWERS] [CHUNKS] [INTERVAL_MS] [PREFILL_BYTES]" >&2
  exit 2
fi

bench_name=bench-follow
source scripts/bench-lib.sh
need curl
[ "$mode" = embedded ] || need redis-server

# Each follower is a descriptor in the service and one in the example.
wanted_fds=$((followers + 512))
if (($(ulimit -n) < wanted_fds)); then
  if ! ulimit -n "$wanted_fds" 2>/dev/null; then
    echo "$bench_name: cannot raise the open-files limit to $wanted_fds (hard limit $(ulimit -Hn))" >&2
    exit 1
  fi
fi

work=$(mktemp -d)
redis_pid=
service_a_pid=
service_b_pid=
program_pid=
bench_pid=
job_id=

cleanup() {
  stop "$bench_pid"
  # Best effort while the job is still open (a run that failed half-way).
  if [ -n "$job_id" ] && [ -n "$service_a_pid" ] && kill -0 "$service_a_pid" 2>/dev/null; then
    curl -sS -o /dev/null -X POST -H "Authorization: Bearer $admin_token" \
      "$base_a/api/v1/jobs/$job_id/cancel" 2>/dev/null || true
  fi
  # The job's program leads its own process group (the fake ansible and its
  # `sleep`); a final report does not stop it.
  if [ -n "$program_pid" ] && kill -0 "$program_pid" 2>/dev/null; then
    kill -TERM -- "-$program_pid" 2>/dev/null || true
  fi
  stop "$service_b_pid"
  stop "$service_a_pid"
  stop "$redis_pid"
  if [ -n "${BENCH_KEEP_LOGS:-}" ]; then
    mkdir -p "$BENCH_KEEP_LOGS"
    cp "$work"/*.log "$work"/*.txt "$BENCH_KEEP_LOGS"/ 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== cargo build --release --bin enac-cd --example follow_bench"
cargo build --release --quiet --bin enac-cd --example follow_bench
binary=$root/target/release/enac-cd
follow_bench=$root/target/release/examples/follow_bench

admin_token=bench-admin-token-0123456789
viewer_token=bench-viewer-token-0123456789
signing_key=bench-signing-key-0123456789abcdef0123456789
deployment_id=follow-bench
secret=bench-secret-0123456789

store_env=()
if [ "$mode" != embedded ]; then
  start_redis "$work/redis.log"
  store_env=(CD_REDIS_URL="redis://127.0.0.1:$redis_port/0")
fi

connection_env=()
if [ -n "${CD_MAX_CONNECTIONS:-}" ]; then
  echo "== CD_MAX_CONNECTIONS=$CD_MAX_CONNECTIONS (from the caller)"
elif ((followers + 16 > 1024)); then
  connection_env=(CD_MAX_CONNECTIONS=$((followers + 64)))
  echo "== CD_MAX_CONNECTIONS raised to $((followers + 64)) (default 1024)"
fi

# start_service NAME: starts a service on a free port; sets $started_pid and $started_base.
start_service() {
  local name=$1 port
  for attempt in 1 2 3 4 5; do
    port=$(free_port)
    started_base=http://127.0.0.1:$port
    echo "== enac-cd serve ($name) on $started_base, $mode store"
    env -u CD_REDIS_URL -u CD_CONFIG "${store_env[@]}" "${connection_env[@]}" \
      CD_LISTEN=127.0.0.1:$port \
      CD_PUBLIC_URL=$started_base \
      CD_LAUNCHER=process \
      CD_PROCESS_COMMAND=$root/tests/fixtures/fake-ansible \
      CD_DATA_DIR=$work/data-$name \
      CD_POLICY_DIR=$root/tests/fixtures/no-policies \
      CD_ADMIN_TOKEN=$admin_token \
      CD_VIEWER_TOKEN=$viewer_token \
      CD_SIGNING_KEY=$signing_key \
      "$binary" serve >"$work/service-$name.log" 2>&1 &
    started_pid=$!
    came_up "$started_pid" 20 curl -fsS "$started_base/" && return 0
    stop "$started_pid"
  done
  echo "$bench_name: enac-cd ($name) did not come up" >&2
  cat "$work/service-$name.log" >&2
  exit 1
}

start_service a
service_a_pid=$started_pid
base_a=$started_base
follow_base=$base_a
followed_pid=$service_a_pid
followed_name=a
if [ "$mode" = redis2 ]; then
  start_service b
  service_b_pid=$started_pid
  follow_base=$started_base
  followed_pid=$service_b_pid
  followed_name=b
fi

registered=$(curl -fsS -H "Authorization: Bearer $admin_token" -H 'Content-Type: application/json' \
  -d "[{\"deployment_id\":\"$deployment_id\",\"inventory\":\"hang-follow-bench\",\"deployment_secret\":\"$secret\"}]" \
  "$base_a/set-available-apps/")
if ! grep -q '"count":1' <<<"$registered"; then
  echo "$bench_name: the app was not registered: $registered" >&2
  exit 1
fi

started=$(curl -fsS -H 'Content-Type: application/json' \
  -d "{\"deployment_id\":\"$deployment_id\",\"deployment_secret\":\"$secret\"}" "$base_a/app-deploy/")
job_id=$(sed -n 's/.*"job_id":"\([^"]*\)".*/\1/p' <<<"$started")
if [ -z "$job_id" ]; then
  echo "$bench_name: /app-deploy/ started no job: $started" >&2
  exit 1
fi
job_is_running() {
  curl -fsS -H "Authorization: Bearer $viewer_token" "$follow_base/api/v1/jobs/$job_id" |
    grep -q '"status":"running"'
}
if ! wait_for 30 "job $job_id to run" job_is_running; then
  cat "$work/service-a.log" >&2
  exit 1
fi
# The program was launched with its job id as its last argument.
program_pid=$(ps -eo pid=,args= | awk -v tail="app-deploy hang-follow-bench $job_id" \
  'substr($0, length($0) - length(tail) + 1) == tail { print $1; exit }')
if [ -z "$program_pid" ]; then
  echo "$bench_name: cannot find the job's program; it will be left running" >&2
fi
echo "== job $job_id running (program pid ${program_pid:-unknown})"

status_kib() { # pid field
  awk -v field="$2:" '$1 == field { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0
}
open_fds() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
rss_before=$(status_kib "$followed_pid" VmRSS)

echo "== follow_bench: $followers followers on $follow_base, $chunks chunks every $interval_ms ms posted to $base_a"
args=(--url "$base_a" --job "$job_id" --followers "$followers" --chunks "$chunks"
  --interval-ms "$interval_ms" --prefill-bytes "$prefill_bytes")
[ "$follow_base" = "$base_a" ] || args+=(--follow-url "$follow_base")
FOLLOW_BENCH_TOKEN=$viewer_token FOLLOW_BENCH_SIGNING_KEY=$signing_key \
  "$follow_bench" "${args[@]}" > >(tee "$work/follow.txt") 2>&1 &
bench_pid=$!

# Samples the followed service while the followers are connected (after
# the example's ALL_FOLLOWING line), keeping the highest figures.
rss_following=0
fds_following=0
threads_following=0
load_following=
while kill -0 "$bench_pid" 2>/dev/null; do
  if grep -q '^ALL_FOLLOWING' "$work/follow.txt" 2>/dev/null; then
    rss=$(status_kib "$followed_pid" VmRSS)
    fds=$(open_fds "$followed_pid")
    threads=$(status_kib "$followed_pid" Threads)
    ((rss > rss_following)) && rss_following=$rss
    ((fds > fds_following)) && fds_following=$fds
    ((threads > threads_following)) && threads_following=$threads
    [ -n "$load_following" ] || load_following=$(cut -d' ' -f1-3 /proc/loadavg)
  fi
  sleep 0.2
done
bench_rc=0
wait "$bench_pid" || bench_rc=$?

rss_end=$(status_kib "$followed_pid" VmRSS)
hwm_end=$(status_kib "$followed_pid" VmHWM)
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
result=$(grep '^RESULT' "$work/follow.txt" || true)
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$result"; }

echo
echo "== results: $mode ($(nproc) CPUs, followers on the same machine; load when following: ${load_following:-?})"
if [ -n "$result" ]; then
  printf 'deliveries %s/%s  delay p50 %s ms  p90 %s ms  p99 %s ms  max %s ms  end events %s\n' \
    "$(field delivered)" "$(field expected)" "$(field p50_ms)" "$(field p90_ms)" \
    "$(field p99_ms)" "$(field max_ms)" "$(field ended)"
fi
if [ -n "$load_following" ]; then
  printf 'followed service: RSS %s MiB before, up to %s MiB while %s followed (%s fds, %s threads)\n' \
    "$(mib "$rss_before")" "$(mib "$rss_following")" "$followers" "$fds_following" "$threads_following"
fi
printf 'followed service: RSS %s MiB at the end, peak (VmHWM) %s MiB\n' "$(mib "$rss_end")" "$(mib "$hwm_end")"
if [ "$mode" = redis2 ]; then
  printf 'replica A (posting): RSS %s MiB, peak %s MiB\n' \
    "$(mib "$(status_kib "$service_a_pid" VmRSS)")" "$(mib "$(status_kib "$service_a_pid" VmHWM)")"
fi
if ((bench_rc != 0)); then
  echo "$bench_name: follow_bench failed (exit $bench_rc); followed service's log tail:" >&2
  tail -n 20 "$work/service-$followed_name.log" >&2
  exit "$bench_rc"
fi
verdict() { # value op target
  if awk -v v="$1" -v t="$3" "BEGIN { exit !(v $2 t) }"; then echo ok; else echo MISSED; fi
}
echo "targets: all delivered: $(verdict "$(field delivered)" '==' "$(field expected)")," \
  "p99 < 200 ms: $(verdict "$(field p99_ms)" '<' 200)," \
  "RSS < 64 MiB: $(verdict "$(mib "$hwm_end")" '<' 64)"
