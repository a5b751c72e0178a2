#!/usr/bin/env bash
# By-hand benchmark of the status page's deployments list `GET /ui/`
# (contract §11, issue 14) over a long history (not a test).
#
#   bash scripts/bench-status-page.sh [redis|embedded]          (default: redis)
#   TMPDIR=/dev/shm bash scripts/bench-status-page.sh embedded  (seeds faster)
#   JOBS=2000 bash scripts/bench-status-page.sh embedded        (a quick check)
#
# Builds the release binary and the `seed_history` example, starts its own
# redis-server (for the redis backend) on a free loopback port, writes JOBS
# finished jobs (default 100000) over DEPLOYMENTS deployments (default 200)
# through the store calls the service makes, writes an app list with every
# one of those deployments, then starts `enac-cd serve` (process launcher,
# fake ansible, an admin and a viewer token). It signs in with the viewer
# token (`POST /ui/login`), checks once that the page lists DEPLOYMENTS rows,
# each with its last job, and runs `wrk --latency` on `/ui/` with the
# session cookie: one request at a time (`-t1 -c1 -d10s`: what a request
# itself takes), then `-t2 -c16 -d10s` (both CPUs busy: latency is mostly
# waiting, p50 ≈ 16 / req/s). Then, one request at a time for 5 s each, a
# rough breakdown: `GET /api/v1/deployments` (the same store calls, as
# JSON, a bearer token instead of a session) and `GET /ui/login` (a small
# page, no store). Prints requests/s, p50 and p99, the CPU time of the
# service (and redis-server) per request, the body size, the load average
# and the service's resident memory.
# Everything it starts is stopped by PID on exit. It installs nothing.
#
# Target: p99 < 10 ms.
# Note: wrk runs on the same machine and takes CPU from the service. The
# embedded store is written durably, one commit per store call: seeding
# 100000 jobs takes minutes on a slow disk; TMPDIR picks where the store
# goes (TMPDIR=/dev/shm: about a minute, no disk sync).
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
bench_name=bench-status-page
source scripts/bench-lib.sh
backend=$(pick_backend redis "$@") || exit 2
jobs=${JOBS:-100000}
deployments=${DEPLOYMENTS:-200}

source scripts/bench-seeded-service.sh

# Sign in with the viewer token: 303 to /ui/ and the session cookie.
login_headers=$(curl -sS -o /dev/null -D - \
  --data-urlencode "token=$viewer_token" "$base/ui/login" | tr -d '\r')
login_status=$(awk 'NR == 1 {print $2}' <<<"$login_headers")
session_id=$(sed -n 's/^[Ss]et-[Cc]ookie: enac_cd_session=\([0-9a-f]\{64\}\);.*/\1/p' \
  <<<"$login_headers")
if [ "$login_status" != 303 ] || [ -z "$session_id" ]; then
  echo "$bench_name: the login did not open a session (HTTP $login_status):" >&2
  echo "$login_headers" >&2
  exit 1
fi
cookie="Cookie: enac_cd_session=$session_id"
echo "== signed in as viewer (session ${session_id:0:8}…)"

# The page once: every deployment a row, every row its last job.
page_status=$(curl -sS -o "$work/page.html" -w '%{http_code}' -H "$cookie" "$base/ui/")
body_bytes=$(wc -c <"$work/page.html")
rows=$(grep -o '<tr data-deployment-id="' "$work/page.html" | wc -l)
rows_with_job=$(grep -o '<tr data-deployment-id="[^"]*" data-job-id="' "$work/page.html" | wc -l)
echo "== GET /ui/: HTTP $page_status, $body_bytes bytes, $rows deployment rows," \
  "$rows_with_job with a last job"
if [ "$page_status" != 200 ] || [ "$rows" -ne "$deployments" ] ||
  [ "$rows_with_job" -ne "$deployments" ]; then
  echo "$bench_name: the page does not list $deployments deployments with their last job:" \
    "$(head -c 300 "$work/page.html")" >&2
  exit 1
fi
api_bytes=$(curl -fsS -o /dev/null -w '%{size_download}' \
  -H "Authorization: Bearer $viewer_token" "$base/api/v1/deployments")
login_bytes=$(curl -fsS -o /dev/null -w '%{size_download}' "$base/ui/login")

rss_of() { # pid field
  awk -v field="$2:" '$1 == field {print $2}' "/proc/$1/status"
}
rss_before=$(rss_of "$service_pid" VmRSS)

cpu_ticks() { # pid: user + system time in clock ticks
  awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"
}
tick_us=$((1000000 / $(getconf CLK_TCK)))

# run_wrk NAME HEADER PATH WRK_ARGS...: prints wrk's report, keeps it in
# $work/NAME.txt, the load average before it in $work/NAME.load and the CPU
# time the service (and redis-server) spent per request in $work/NAME.cpu.
run_wrk() {
  local name=$1 header=$2 path=$3
  shift 3
  echo
  cut -d' ' -f1-3 /proc/loadavg >"$work/$name.load"
  echo "== wrk $* --latency $base$path (load average $(cat "$work/$name.load"))"
  local service_before redis_before=0 redis_after=0
  service_before=$(cpu_ticks "$service_pid")
  [ -z "$redis_pid" ] || redis_before=$(cpu_ticks "$redis_pid")
  wrk "$@" --latency -H "$header" "$base$path" | tee "$work/$name.txt"
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
bad_of() { # non-2xx answers and socket errors
  awk '/Non-2xx/ {n += $NF} /Socket errors/ {gsub(/,/, ""); n += $4 + $6 + $8 + $10}
       END {print n + 0}' "$work/$1.txt"
}

run_wrk ui-c1 "$cookie" /ui/ -t1 -c1 -d10s
run_wrk ui-c16 "$cookie" /ui/ -t2 -c16 -d10s
rss_loaded=$(rss_of "$service_pid" VmRSS)
run_wrk api-c1 "Authorization: Bearer $viewer_token" /api/v1/deployments -t1 -c1 -d5s
run_wrk login-c1 "$cookie" /ui/login -t1 -c1 -d5s

hwm=$(rss_of "$service_pid" VmHWM)
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

echo
echo "== results: $backend store, $jobs jobs over $deployments deployments" \
  "(seeded in ${seed_seconds} s; $(nproc) CPUs, wrk on the same machine)"
format='%-30s %-10s %9s %7s %7s | %6s %6s | %7s %4s | %s\n'
printf "$format" "" "" "" p50 p99 "CPU/req:" "" "" "" ""
printf "$format" path wrk req/s ms ms "cd us" redis bytes bad "load average before"
row() { # name path wrk bytes
  printf "$format" "$2" "$3" "$(rps_of "$1")" "$(pct_of "$1" 50%)" "$(pct_of "$1" 99%)" \
    "$(cpu_of "$1" 1)" "$(cpu_of "$1" 2)" "$4" "$(bad_of "$1")" "$(cat "$work/$1.load")"
}
row ui-c1 /ui/ -c1 "$body_bytes"
row ui-c16 /ui/ -c16 "$body_bytes"
row api-c1 /api/v1/deployments -c1 "$api_bytes"
row login-c1 "/ui/login (no store)" -c1 "$login_bytes"
echo "(CPU/req: CPU time of enac-cd and of redis-server per request;" \
  "bytes: one answer's body; bad: non-2xx answers and socket errors)"
printf 'service RSS: %s MiB before the runs, %s MiB after /ui/ at -c16, peak (VmHWM) %s MiB\n' \
  "$(mib "$rss_before")" "$(mib "$rss_loaded")" "$(mib "$hwm")"
if [ "$backend" = redis ]; then
  printf 'redis-server RSS: %s MiB\n' "$(mib "$(rss_of "$redis_pid" VmRSS)")"
else
  printf 'store file: %s MiB (in %s)\n' "$(du -m "$work/data/enac-cd.redb" | cut -f1)" \
    "$(dirname "$work")"
fi
echo "load average after the runs: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
for name in ui-c1 ui-c16; do
  p99=$(pct_of "$name" 99%)
  if awk -v v="$p99" 'BEGIN { exit !(v < 10) }' && [ "$(bad_of "$name")" = 0 ]; then
    echo "target: /ui/ p99 < 10 ms at ${name#ui-}: ok ($p99 ms)"
  else
    echo "target: /ui/ p99 < 10 ms at ${name#ui-}: MISSED ($p99 ms)"
  fi
done
