#!/usr/bin/env bash
# By-hand benchmark of report delivery to notification targets (contract §12).
#
#   bash scripts/bench-reports.sh [embedded|redis]     (default: embedded)
#
# Starts redis-server (redis), examples/report_receiver.py (checks every
# signature) and `enac-cd serve` (process launcher, a job program that reports
# running then success at once, CD_REPORT_RETRY=1s) on free loopback ports;
# every deployment notifies the receiver of `started` and `success`. Measures
# finished_at -> job.success for 40 jobs one after the other (paced) and for
# 200 jobs, 10 on each of 20 deployments side by side (load), with
# notifications/s, duplicates, missing ones, bad signatures and the bursts
# they came in; then 10 jobs whose target answers 503 to each job's first 3
# requests (retry: all arrive, in order, how long); then the CPU time of the
# service (and redis-server) over 30 s with nothing to deliver, and RSS.
# BENCH_PACED, BENCH_DEPLOYMENTS, BENCH_JOBS, BENCH_FLAKY, BENCH_FAIL_FIRST,
# BENCH_IDLE_SECONDS change those numbers. Needs curl, python3 (and
# redis-server); installs nothing. Everything it starts is stopped by PID.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
bench_name=bench-reports
source scripts/bench-lib.sh
backend=$(pick_backend embedded "$@") || exit 2
counts=("${BENCH_PACED:-40}" "${BENCH_DEPLOYMENTS:-20}" "${BENCH_JOBS:-10}" "${BENCH_FLAKY:-10}"
  "${BENCH_FAIL_FIRST:-3}" "${BENCH_IDLE_SECONDS:-30}")

need curl python3
[ "$backend" = embedded ] || need redis-server

work=$(mktemp -d)
redis_pid=
receiver_pid=
service_pid=

cleanup() {
  stop "$service_pid"
  stop "$receiver_pid"
  stop "$redis_pid"
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== cargo build --release --bin enac-cd"
cargo build --release --quiet --bin enac-cd
binary=$root/target/release/enac-cd

admin_token=bench-admin-token-0123456789
app_secret=bench-app-secret-0123456789
export BENCH_HOOK_SECRET=bench-hook-secret-0123456789
BENCH_NOTIFY_SECRET=whsec_$(head -c 32 /dev/urandom | base64 -w0)
export BENCH_NOTIFY_SECRET

receiver_port=$(free_port)
echo "== report_receiver.py on 127.0.0.1:$receiver_port"
python3 examples/report_receiver.py "$receiver_port" "$work/received.jsonl" "${counts[4]}" \
  >"$work/receiver.log" 2>&1 &
receiver_pid=$!
wait_for 10 "the receiver" listening "$receiver_port"

cat >"$work/stand-in" <<EOF
#!/usr/bin/env bash
source "$root/examples/cd-callback.sh"
cd_callback running 'step 1\n' false >/dev/null
cd_callback success 'done\n' true >/dev/null
EOF
chmod +x "$work/stand-in"

mkdir -p "$work/policies"
apps=()
add_app() { # deployment_id repository_id receiver_path
  apps+=("{\"deployment_id\":\"$1\",\"inventory\":\"inv-$1\",\"deployment_secret\":\"$app_secret\"}")
  cat >"$work/policies/$1.toml" <<EOF
deployment_id = "$1"
[[webhook]]
provider = "github"
secret_env = "BENCH_HOOK_SECRET"
events = ["push"]
[webhook.match]
"/repository/id" = $2
[[notify]]
url = "http://127.0.0.1:$receiver_port$3"
format = "standard-webhooks"
secret_env = "BENCH_NOTIFY_SECRET"
events = ["started", "success"]
EOF
}
for ((n = 0; n < counts[1]; n++)); do add_app "$(printf 'bench-app-%02d' "$n")" $((1000 + n)) /hook; done
for ((n = 0; n < counts[3]; n++)); do add_app "$(printf 'bench-flaky-%02d' "$n")" $((2000 + n)) /flaky; done
(IFS=,; echo "[${apps[*]}]") >"$work/apps.json"

store_env=(CD_DATA_DIR="$work/data")
if [ "$backend" = redis ]; then
  start_redis "$work/redis.log"
  store_env+=(CD_REDIS_URL="redis://127.0.0.1:$redis_port/0")
fi

service_port=$(free_port)
base=http://127.0.0.1:$service_port
echo "== enac-cd serve on $base ($backend store)"
env -u CD_REDIS_URL -u CD_CONFIG "${store_env[@]}" \
  CD_LISTEN=127.0.0.1:$service_port CD_LAUNCHER=process CD_PROCESS_COMMAND="$work/stand-in" \
  CD_ADMIN_TOKEN=$admin_token CD_APPS_FILE="$work/apps.json" CD_POLICY_DIR="$work/policies" \
  CD_REPORT_RETRY=1s "$binary" serve >"$work/service.log" 2>&1 &
service_pid=$!
if ! wait_for 20 "enac-cd to answer GET /" curl -fsS "$base/"; then
  cat "$work/service.log" >&2
  exit 1
fi

echo "== paced, load, retry and idle runs (about a minute)"
python3 - "$base" "$admin_token" "$app_secret" "$work" "$backend" "$service_pid" "$redis_pid" \
  "${counts[@]}" <<'EOF'
import json, math, os, sys, time, urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

base, admin, secret, work, backend, pid, redis_pid = sys.argv[1:8]
paced, deployments, per, flaky, fail_first, idle = map(int, sys.argv[8:14])
load_at_start = os.getloadavg()

def call(path, body=None):
    headers = {"Content-Type": "application/json"}
    if path.startswith("/api/"):  # elsewhere a bearer would be read as an OIDC token
        headers["Authorization"] = f"Bearer {admin}"
    data = None if body is None else json.dumps(body).encode()
    with urllib.request.urlopen(urllib.request.Request(base + path, data, headers), timeout=30) as answer:
        return answer.read().decode()

def cpu_s(of):  # utime + stime of every thread (fields 14 and 15)
    fields = open(f"/proc/{of}/stat").read().rsplit(")", 1)[1].split() if of else [0] * 13
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

def rss_mib():
    return int(next(l for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS:")).split()[1]) / 1024

def job(job_id):
    return json.loads(call(f"/api/v1/jobs/{job_id}"))

def run(deployment, count):  # one at a time: a busy inventory rejects the next
    done = []
    for _ in range(count):
        body = {"deployment_id": deployment, "deployment_secret": secret}
        done.append(json.loads(call("/app-deploy/", body))["job_id"])
        while job(done[-1])["status"] not in ("success", "error"):
            time.sleep(0.02)
    return done

def run_all(names, count):
    with ThreadPoolExecutor(len(names)) as pool:
        return [j for jobs in pool.map(lambda name: run(name, count), names) for j in jobs]

def first_ok(records, kind):  # job -> arrival of its first `kind` answered 2xx (records by time)
    return {r["job"]: r["t"] for r in reversed(records) if r["type"] == kind and r["status"] < 300}

def delivered(jobs, deadline_s):  # the jobs' requests, once each job.success got a 2xx
    until = time.time() + deadline_s
    while True:
        with open(f"{work}/received.jsonl") as lines:
            records = sorted((r for r in map(json.loads, lines) if r["job"] in jobs), key=lambda r: r["t"])
        if len(first_ok(records, "job.success")) == len(jobs) or time.time() > until:
            return records
        time.sleep(0.1)

def stats(values):
    ms = sorted(v * 1000 for v in values) or [math.nan]
    at = lambda q: ms[max(0, math.ceil(q * len(ms)) - 1)]  # nearest rank
    return f"p50 {at(0.5):7.1f} ms  p99 {at(0.99):7.1f} ms  max {ms[-1]:7.1f} ms  (n={len(values)})"

def finished(j):  # finished_at is RFC 3339 with milliseconds, UTC
    stamp = datetime.strptime(job(j)["finished_at"], "%Y-%m-%dT%H:%M:%S.%fZ")
    return stamp.replace(tzinfo=timezone.utc).timestamp()

def latency(jobs, records):  # finished_at -> first job.success answered 2xx
    arrived = first_ok(records, "job.success")
    return [arrived[j] - finished(j) for j in jobs if j in arrived]

def bursts(records):  # arrivals more than 0.2 s apart start a new burst
    groups = [[]]
    for previous, r in zip([None] + records, records):
        if previous and r["t"] - previous["t"] > 0.2:
            groups.append([])
        groups[-1].append(r["job"])
    return len(groups), max(len(set(g)) for g in groups)

rss_start = rss_mib()
paced_jobs = run("bench-app-00", paced)
paced_latency = latency(paced_jobs, delivered(paced_jobs, 30))

t0 = time.time()
jobs = run_all([f"bench-app-{n:02d}" for n in range(deployments)], per)
delivered(jobs, 120)
time.sleep(1)  # room for a late duplicate, and for the service to save its progress
records, details = delivered(jobs, 0), [job(j) for j in jobs]
ids = [r["id"] for r in records if r["status"] < 300]
expected = {f"{j}_{e}" for j in jobs for e in ("started", "success")}
started_at = first_ok(records, "job.started")
out_of_order = sum(started_at.get(j, math.inf) > t for j, t in first_ok(records, "job.success").items())
wall = max((r["t"] for r in records), default=time.time()) - t0
not_success = sum(d["status"] != "success" for d in details)
not_delivered = sum(any(r["state"] != "delivered" for r in d["reports"]) for d in details)
extra_tries = sum(r["attempts"] - 2 for d in details for r in d["reports"])
ended = max(map(finished, jobs)) - t0

flaky_jobs = run_all([f"bench-flaky-{n:02d}" for n in range(flaky)], 1)
flaky_records = delivered(flaky_jobs, 120)
flaky_ok, in_order, spans = first_ok(flaky_records, "job.success"), 0, []
for j in flaky_jobs:
    tries = [r for r in flaky_records if r["job"] == j]
    answered = [r["type"] for r in tries if r["status"] < 300]
    before = tries[:next((i for i, r in enumerate(tries) if r["status"] < 300), len(tries))]
    in_order += answered == ["job.started", "job.success"] and all(r["type"] == "job.started" for r in before)
    spans += [flaky_ok[j] - tries[0]["t"]] if j in flaky_ok else []

time.sleep(1)
rss_after, metrics_before, cpu = rss_mib(), call("/metrics"), (cpu_s(pid), cpu_s(redis_pid))
time.sleep(idle)
service_cpu, redis_cpu = cpu_s(pid) - cpu[0], cpu_s(redis_pid) - cpu[1]
metrics = [l for l in call("/metrics").splitlines() if l.startswith("enac_cd_report_deliveries_total")]
idle_metrics = "unchanged" if set(metrics) <= set(metrics_before.splitlines()) else "CHANGED"
count, widest = bursts(records)
bad = lambda records: sum(not r["sig"] for r in records)

print(f"\n== results: {backend} store, {os.cpu_count()} CPUs, "
      f"1-min load average {load_at_start[0]:.2f} at start, {os.getloadavg()[0]:.2f} at end")
print(f"paced: {len(paced_jobs)} jobs one after the other")
print(f"  finished_at -> job.success  {stats(paced_latency)}")
print(f"load: {len(jobs)} jobs ({deployments} deployments x {per}, side by side), "
      f"{not_success} not success, all ended {ended:.1f} s after the first start")
print(f"  finished_at -> job.success  {stats(latency(jobs, records))}")
print(f"  throughput   {len(ids)} notifications in {wall:.1f} s = {len(ids) / wall:.1f}/s "
      f"({len(jobs) / wall:.1f} jobs/s), in {count} bursts of at most {widest} jobs")
print(f"  exactly once: expected {len(expected)}, answered 2xx {len(ids)}, "
      f"duplicates {len(ids) - len(set(ids))}, missing {len(expected - set(ids))}, "
      f"unexpected {len(set(ids) - expected)}, out of order {out_of_order}, bad signatures {bad(records)}")
print(f"  API: jobs with a report not delivered {not_delivered}, tries beyond one per event {extra_tries}")
print(f"retry: {len(flaky_jobs)} jobs, each job's first {fail_first} requests answered 503, CD_REPORT_RETRY=1s")
print(f"  arrived {len(flaky_ok)}/{len(flaky_jobs)}, in order (no success before started) "
      f"{in_order}/{len(flaky_jobs)}, bad signatures {bad(flaky_records)}")
print(f"  first try -> job.success    {stats(spans)}")
print(f"  finished_at -> job.success  {stats(latency(flaky_jobs, flaky_records))}")
print(f"  (pauses alone {(2 ** fail_first - 1) / 2:.1f}-{2 ** fail_first - 1:.1f} s, plus up to 0.5 s of poll each)")
print(f"idle: enac-cd {service_cpu * 1000:.0f} ms CPU over {idle} s ({100 * service_cpu / idle:.2f}% of a core)"
      + (f", redis-server {redis_cpu * 1000:.0f} ms" if redis_pid else "") + f", report metrics {idle_metrics}")
print(f"RSS: {rss_start:.1f} MiB at start, {rss_after:.1f} MiB after the runs, {rss_mib():.1f} MiB after idle")
print("\n".join(metrics))
EOF
