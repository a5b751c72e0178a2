#!/usr/bin/env bash
# By-hand benchmark of the two legacy paths anyone can hit hardest (not a
# test): /job-status/ with the right secret (every deploy client polls it) and
# /app-deploy/ with a wrong secret (the refusal path).
#
#   bash scripts/bench.sh [redis|embedded]     (default: redis)
#
# Builds the release binary, starts its own redis-server (for the redis
# backend) and `enac-cd serve`
# (process launcher, fake ansible) on free loopback ports, runs one job to
# the end, then `wrk -t2 -c32 -d10s --latency` against each path and prints
# requests/s, p99 latency and the service's resident memory. Everything it
# starts is stopped by PID on exit. It installs nothing.
#
# Targets: /job-status/ >= 15000 req/s, p99 < 10 ms, RSS < 30 MiB.
# Note: wrk runs on the same machine and takes CPU from the service.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
bench_name=bench
source scripts/bench-lib.sh
backend=$(pick_backend redis "$@") || exit 2

need wrk curl
[ "$backend" = embedded ] || need redis-server

work=$(mktemp -d)
redis_pid=
service_pid=

cleanup() {
  stop "$service_pid"
  stop "$redis_pid"
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== cargo build --release"
cargo build --release --quiet
binary=$root/target/release/enac-cd

store_env=()
if [ "$backend" = redis ]; then
  start_redis "$work/redis.log"
  store_env=(CD_REDIS_URL="redis://127.0.0.1:$redis_port/0")
else
  echo "== embedded store in $work/data"
fi

deployment_id=bench
secret=bench-secret-0123456789
cat >"$work/apps.json" <<EOF
[{"deployment_id":"$deployment_id","inventory":"ok-bench","deployment_secret":"$secret"},
 {"deployment_id":"busy","inventory":"sleep-45-busy","deployment_secret":"$secret"}]
EOF

service_port=$(free_port)
base=http://127.0.0.1:$service_port
echo "== enac-cd serve on $base"
env "${store_env[@]}" \
  CD_LISTEN=127.0.0.1:$service_port \
  CD_LAUNCHER=process \
  CD_PROCESS_COMMAND=$root/tests/fixtures/fake-ansible \
  CD_DATA_DIR=$work/data \
  CD_APPS_FILE=$work/apps.json \
  CD_POLICY_DIR=$root/tests/fixtures/no-policies \
  "$binary" serve >"$work/service.log" 2>&1 &
service_pid=$!
if ! wait_for 20 "enac-cd to answer GET /" curl -fsS "$base/"; then
  cat "$work/service.log" >&2
  exit 1
fi

post() { # path body
  curl -fsS -H 'Content-Type: application/json' -d "$2" "$base$1"
}

started=$(post /app-deploy/ "{\"deployment_id\":\"$deployment_id\",\"deployment_secret\":\"$secret\"}")
job_id=$(sed -n 's/.*"job_id":"\([^"]*\)".*/\1/p' <<<"$started")
if [ -z "$job_id" ]; then
  echo "bench: /app-deploy/ started no job: $started" >&2
  exit 1
fi
status_body="{\"deployment_id\":\"$deployment_id\",\"deployment_secret\":\"$secret\",\"job_id\":\"$job_id\"}"
job_is_final() { post /job-status/ "$status_body" | grep -Eq '"status":"(success|error)"'; }
wait_for 30 "job $job_id to end" job_is_final
final=$(post /job-status/ "$status_body")
echo "== job $job_id: $final"
if ! grep -q '"status":"success"' <<<"$final"; then
  echo "bench: the job did not succeed" >&2
  exit 1
fi
refused=$(post /app-deploy/ "{\"deployment_id\":\"$deployment_id\",\"deployment_secret\":\"wrong-secret-for-the-benchmark\"}")
if ! grep -q '"App not found"' <<<"$refused"; then
  echo "bench: a wrong secret was not refused: $refused" >&2
  exit 1
fi

# A job that runs through the runs below keeps the `busy` inventory busy
# (it ends by itself 45 s after it started).
busy=$(post /app-deploy/ "{\"deployment_id\":\"busy\",\"deployment_secret\":\"$secret\"}")
if ! grep -q '"status":"starting"' <<<"$busy"; then
  echo "bench: the busy job did not start: $busy" >&2
  exit 1
fi

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$service_pid/status"; }
rss_before=$(rss_kib)

export BENCH_DEPLOYMENT_ID=$deployment_id BENCH_SECRET=$secret BENCH_JOB_ID=$job_id

# run_wrk NAME SCRIPT PATH: prints wrk's report, keeps it in $work/NAME.txt.
run_wrk() {
  echo
  echo "== wrk -t2 -c32 -d10s --latency -s $2 $base$3"
  wrk -t2 -c32 -d10s --latency -s "$2" "$base$3" | tee "$work/$1.txt"
}
rps_of() { awk '/^Requests\/sec:/ {print $2}' "$work/$1.txt"; }
p99_of() { awk '$1 == "99%" {print $2}' "$work/$1.txt"; }
non2xx_of() { awk '/Non-2xx/ {n = $NF} END {print n + 0}' "$work/$1.txt"; }

run_wrk status scripts/wrk/job-status.lua /job-status/
run_wrk refused scripts/wrk/deploy-refused.lua /app-deploy/
run_wrk busy scripts/wrk/deploy-busy.lua /app-deploy/

rss_after=$(rss_kib)

verdict() { # value op target
  if awk -v v="$1" -v t="$3" "BEGIN { exit !(v $2 t) }"; then echo ok; else echo MISSED; fi
}
status_rps=$(rps_of status)
status_p99=$(to_ms "$(p99_of status)")
rss_mib=$(awk -v k="$rss_after" 'BEGIN { printf "%.1f", k / 1024 }')

echo
echo "== results: $backend store ($(nproc) CPUs, wrk on the same machine)"
printf '%-22s %12s req/s  p99 %8s ms  non-2xx %s\n' \
  "/job-status/" "$status_rps" "$status_p99" "$(non2xx_of status)"
printf '%-22s %12s req/s  p99 %8s ms  non-2xx %s\n' \
  "/app-deploy/ refused" "$(rps_of refused)" "$(to_ms "$(p99_of refused)")" "$(non2xx_of refused)"
printf '%-22s %12s req/s  p99 %8s ms  non-2xx %s\n' \
  "/app-deploy/ busy" "$(rps_of busy)" "$(to_ms "$(p99_of busy)")" "$(non2xx_of busy)"
printf 'service RSS: %s MiB after the runs (%s KiB before them)\n' "$rss_mib" "$rss_before"
echo
echo "targets: /job-status/ >= 15000 req/s: $(verdict "$status_rps" '>=' 15000)," \
  "p99 < 10 ms: $(verdict "$status_p99" '<' 10)," \
  "RSS < 30 MiB: $(verdict "$rss_mib" '<' 30)"
