#!/usr/bin/env bash
# By-hand benchmark of the job history list `GET /api/v1/jobs` (contract
# §10) over a long history (not a test).
#
#   bash scripts/bench-history.sh [redis|embedded]          (default: redis)
#   JOBS=2000 bash scripts/bench-history.sh embedded        (a quick check)
#
# Builds the release binary and the `seed_history` example, starts its own
# redis-server (for the redis backend) on a free loopback port, writes JOBS
# finished jobs (default 100000) over DEPLOYMENTS deployments (default 50)
# through the store calls the service makes, then starts `enac-cd serve`
# (process launcher, fake ansible, an admin and a viewer token) and runs
# `wrk -t2 -c16 -d10s --latency` with the viewer token against the first
# page, one deployment's jobs, `status=error` (one job in eight) and a page
# from the middle of the history (a `next_cursor` handed out there). Then
# the same paths one request at a time (`wrk -t1 -c1 -d5s`): 16 connections
# keep both CPUs busy, so their latency is mostly waiting; one connection
# shows what a request itself takes. Prints requests/s, p50 and p99 per path
# and load, and the service's resident memory.
# Everything it starts is stopped by PID on exit. It installs nothing.
#
# Target: p99 < 5 ms on every path.
# Note: wrk runs on the same machine and takes CPU from the service. The
# embedded store is written durably, one commit per store call: seeding
# 100000 jobs takes minutes on a slow disk (TMPDIR picks where it goes).
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
bench_name=bench-history
source scripts/bench-lib.sh
backend=$(pick_backend redis "$@") || exit 2
jobs=${JOBS:-100000}
deployments=${DEPLOYMENTS:-50}

source scripts/bench-seeded-service.sh

list() { # query
  curl -fsS -H "Authorization: Bearer $viewer_token" "$base/api/v1/jobs$1"
}
cursor_of() { sed -n 's/.*"next_cursor":"\([^"]*\)".*/\1/p'; }
count_of() { grep -o '"job_id"' | wc -l; }

first=$(list "")
if [ "$(count_of <<<"$first")" -ne 50 ] || [ -z "$(cursor_of <<<"$first")" ]; then
  echo "$bench_name: the first page is not 50 jobs and a cursor: ${first:0:300}" >&2
  exit 1
fi
[[ $first =~ \"deployment_id\":\"([^\"]*)\" ]]
deployment_id=${BASH_REMATCH[1]}

# A cursor from the middle of the history, reached by following next_cursor.
cursor=
for ((page = 0; page < jobs / 2 / 500; page++)); do
  cursor=$(list "?limit=500${cursor:+&cursor=$cursor}" | cursor_of)
  [ -n "$cursor" ] || break
done
if [ -z "$cursor" ]; then
  cursor=$(cursor_of <<<"$first")
fi
echo "== deployment $deployment_id; cursor $cursor (after $((page * 500)) jobs)"

rss_of() { # pid field
  awk -v field="$2:" '$1 == field {print $2}' "/proc/$1/status"
}
rss_before=$(rss_of "$service_pid" VmRSS)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

paths=(
  "/api/v1/jobs"
  "/api/v1/jobs?deployment_id=$deployment_id"
  "/api/v1/jobs?status=error"
  "/api/v1/jobs?cursor=$cursor"
)
names=(first deployment error deep)

cpu_ticks() { # pid: user + system time in clock ticks
  awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"
}
tick_us=$((1000000 / $(getconf CLK_TCK)))

# run_wrk NAME PATH WRK_ARGS...: prints wrk's report, keeps it in $work/NAME.txt
# and the CPU time the service (and redis-server) spent per request in
# $work/NAME.cpu.
run_wrk() {
  local name=$1 path=$2
  shift 2
  echo
  echo "== wrk $* --latency $base$path"
  local service_before redis_before=0 redis_after=0
  service_before=$(cpu_ticks "$service_pid")
  [ -z "$redis_pid" ] || redis_before=$(cpu_ticks "$redis_pid")
  wrk "$@" --latency -H "Authorization: Bearer $viewer_token" "$base$path" |
    tee "$work/$name.txt"
  [ -z "$redis_pid" ] || redis_after=$(cpu_ticks "$redis_pid")
  awk -v s=$(($(cpu_ticks "$service_pid") - service_before)) -v r=$((redis_after - redis_before)) \
    -v n="$(awk '/requests in/ {print $1}' "$work/$name.txt")" -v us="$tick_us" \
    -v redis="$redis_pid" \
    'BEGIN { printf "%.0f %s\n", s * us / n, redis ? sprintf("%.0f", r * us / n) : "-" }' \
    >"$work/$name.cpu"
}
cpu_of() { cut -d' ' -f"$2" "$work/$1.cpu"; }
rps_of() { awk '/^Requests\/sec:/ {print $2}' "$work/$1.txt"; }
pct_of() { to_ms "$(awk -v p="$2" '$1 == p {print $2}' "$work/$1.txt")"; }
non2xx_of() { awk '/Non-2xx/ {n = $NF} END {print n + 0}' "$work/$1.txt"; }
body_of() { # path
  curl -fsS -o /dev/null -w '%{size_download}' -H "Authorization: Bearer $viewer_token" "$base$1"
}

for i in "${!paths[@]}"; do
  run_wrk "${names[$i]}" "${paths[$i]}" -t2 -c16 -d10s
done
rss_loaded=$(rss_of "$service_pid" VmRSS)
for i in "${!paths[@]}"; do
  run_wrk "${names[$i]}-c1" "${paths[$i]}" -t1 -c1 -d5s
done

hwm=$(rss_of "$service_pid" VmHWM)
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

echo
echo "== results: $backend store, $jobs jobs over $deployments deployments" \
  "(seeded in ${seed_seconds} s; $(nproc) CPUs, wrk on the same machine;" \
  "load average before the runs: $load_before)"
printf '%-48s %9s %7s %7s | %7s %7s %7s | %6s %6s | %6s %4s\n' "" "-c16:" "p50" "p99" \
  "-c1:" "p50" "p99" "CPU/req:" "" "" ""
printf '%-48s %9s %7s %7s | %7s %7s %7s | %6s %6s | %6s %4s\n' path req/s ms ms req/s ms ms \
  "cd us" "redis" bytes bad
missed=0
for i in "${!paths[@]}"; do
  name=${names[$i]}
  p99=$(pct_of "$name" 99%)
  if ! awk -v v="$p99" 'BEGIN { exit !(v < 5) }'; then missed=1; fi
  printf '%-48s %9s %7s %7s | %7s %7s %7s | %6s %6s | %6s %4s\n' "${paths[$i]:0:48}" \
    "$(rps_of "$name")" "$(pct_of "$name" 50%)" "$p99" \
    "$(rps_of "$name-c1")" "$(pct_of "$name-c1" 50%)" "$(pct_of "$name-c1" 99%)" \
    "$(cpu_of "$name" 1)" "$(cpu_of "$name" 2)" \
    "$(body_of "${paths[$i]}")" "$(($(non2xx_of "$name") + $(non2xx_of "$name-c1")))"
done
echo "(CPU/req: CPU time of enac-cd and of redis-server per request at -c16;" \
  "bytes: one answer's body; bad: non-2xx answers)"
printf 'service RSS: %s MiB before the runs, %s MiB after -c16, peak (VmHWM) %s MiB\n' \
  "$(mib "$rss_before")" "$(mib "$rss_loaded")" "$(mib "$hwm")"
if [ "$backend" = redis ]; then
  printf 'redis-server RSS: %s MiB\n' "$(mib "$(rss_of "$redis_pid" VmRSS)")"
else
  printf 'store file: %s MiB\n' "$(du -m "$work/data/enac-cd.redb" | cut -f1)"
fi
echo
if [ "$missed" = 0 ]; then
  echo "target: p99 < 5 ms on every path at -c16: ok"
else
  echo "target: p99 < 5 ms on every path at -c16: MISSED"
fi
