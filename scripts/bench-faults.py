#!/usr/bin/env python3
"""Fault-injection benchmark, run by hand (not a test).

Three enac-cd replicas share one redis-server (all on free loopback ports,
process launcher). Thirty inventories each deploy ten jobs one after the
other (300 jobs), sending every request to a random live replica. When a
third of the jobs have been answered, one replica is killed with SIGKILL.
The job program appends numbered lines through callbacks (with an
Idempotency-Key, retried on any live replica) and logs when it starts and
ends, so the script can report:

  jobs answered, jobs final, jobs lost (must be 0), overlaps of two programs
  on one inventory (0), doubled or missing output lines (0), and how long
  the dead replica's open jobs waited until another replica adopted them.

Usage: scripts/bench-faults.py [--inventories 30] [--jobs 10] [--lines 10]
                               [--pause 0.2] [--long 50]
Needs: cargo, redis-server, redis-cli, curl. Everything it starts it stops.
"""

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECRET = "bench-faults-secret-0123456789"
PREFIX = "enac-cd:"

PROGRAM = r"""#!/usr/bin/env bash
# The benchmark's job program: app-deploy INVENTORY JOB_ID
inventory=$2
job=$CD_JOB_ID
pause=__PAUSE__
# The first job of every tenth inventory runs long, so that the killed
# replica has open jobs that another one must adopt.
case $inventory in
  *0) grep -q " $inventory " "__EVENTS__" 2>/dev/null || pause=__LONG_PAUSE__ ;;
esac
echo "start $inventory $job $(date +%s.%N)" >> "__EVENTS__"
report() { # body key
  local try url code
  for try in $(seq 1 300); do
    for url in __REPLICAS__; do
      code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 3 \
        -H "Authorization: Bearer $CD_CALLBACK_TOKEN" -H "Idempotency-Key: $2" \
        -H 'Content-Type: application/json' -d "$1" "$url/set-job-status/")
      case $code in 200|409) return 0 ;; esac
    done
    sleep 0.2
  done
  return 1
}
for i in $(seq 1 __LINES__); do
  report "{\"job_id\":\"$job\",\"status\":\"running\",\"output\":\"$job line $i\\n\",\"append\":true}" "$job-$i"
  sleep "$pause"
done
echo "end $inventory $job $(date +%s.%N)" >> "__EVENTS__"
report "{\"job_id\":\"$job\",\"status\":\"success\"}" "$job-final"
"""


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_port(port, seconds):
    until = time.time() + seconds
    while time.time() < until:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    sys.exit(f"bench-faults: nothing listens on {port} after {seconds} s")


def post(base, path, body, timeout=5.0):
    request = urllib.request.Request(
        base + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


class Cluster:
    def __init__(self, work, binary, program, redis_port):
        self.bases = {}
        self.processes = {}
        self.dead = set()
        self.lock = threading.Lock()
        self.work = work
        self.binary = binary
        self.program = program
        self.redis_port = redis_port

    def start(self, name, port):
        base = f"http://127.0.0.1:{port}"
        env = dict(
            os.environ,
            CD_LISTEN=f"127.0.0.1:{port}",
            CD_PUBLIC_URL=base,
            CD_REDIS_URL=f"redis://127.0.0.1:{self.redis_port}/0",
            CD_LAUNCHER="process",
            CD_PROCESS_COMMAND=self.program,
            CD_DATA_DIR=os.path.join(self.work, name),
            CD_POLICY_DIR=os.path.join(ROOT, "tests/fixtures/no-policies"),
            CD_ON_BUSY="reject",
            CD_ADMIN_TOKEN="bench-faults-admin-token-0123",
        )
        log = open(os.path.join(self.work, f"{name}.log"), "w")
        self.processes[name] = subprocess.Popen(
            [self.binary, "serve"], env=env, stdout=log, stderr=log
        )
        self.bases[name] = base
        wait_port(port, 20)

    def live(self):
        with self.lock:
            return [name for name in self.bases if name not in self.dead]

    def kill(self, name):
        with self.lock:
            self.dead.add(name)
        self.processes[name].send_signal(signal.SIGKILL)
        self.processes[name].wait()

    def call(self, path, body, deadline):
        """POSTs to a random live replica, trying others until `deadline`."""
        while time.time() < deadline:
            name = random.choice(self.live())
            try:
                return name, post(self.bases[name], path, body)
            except (urllib.error.URLError, OSError, ValueError):
                time.sleep(0.1)
        raise TimeoutError(path)

    def stop_all(self):
        for name, process in self.processes.items():
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()


def redis_cli(port, *args):
    result = subprocess.run(
        ["redis-cli", "-p", str(port), *args], capture_output=True, text=True
    )
    return result.stdout.strip()


def overlaps(events_path):
    """Pairs of programs whose [start, end] overlap on one inventory."""
    intervals = {}
    starts = {}
    with open(events_path) as events:
        for line in events:
            kind, inventory, job, at = line.split()
            if kind == "start":
                starts[job] = (inventory, float(at))
            elif job in starts:
                intervals.setdefault(inventory, []).append((starts[job][1], float(at)))
    count = 0
    for spans in intervals.values():
        spans.sort()
        for (_, first_end), (second_start, _) in zip(spans, spans[1:]):
            if second_start < first_end:
                count += 1
    return count


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inventories", type=int, default=30)
    parser.add_argument("--jobs", type=int, default=10, help="jobs per inventory")
    parser.add_argument("--lines", type=int, default=10, help="output lines per job")
    parser.add_argument("--pause", type=float, default=0.2, help="seconds between lines")
    parser.add_argument("--long", type=float, default=50,
                        help="seconds the first job of every tenth inventory lasts")
    args = parser.parse_args()
    for tool in ["cargo", "redis-server", "redis-cli", "curl"]:
        if shutil.which(tool) is None:
            sys.exit(f"bench-faults: {tool} is missing")

    print("== cargo build --release", flush=True)
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    binary = os.path.join(ROOT, "target/release/enac-cd")

    work = tempfile.mkdtemp(prefix="bench-faults-")
    events = os.path.join(work, "events.log")
    redis_port = free_port()
    redis = subprocess.Popen(
        ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
         "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        cwd=work,
    )
    wait_port(redis_port, 10)
    names = ["a", "b", "c"]
    cluster = Cluster(work, binary, os.path.join(work, "program"), redis_port)
    try:
        # The program calls back any replica, so it is written with their
        # addresses before they start (they check it is executable).
        ports = {name: free_port() for name in names}
        replicas = " ".join(f"http://127.0.0.1:{ports[name]}" for name in names)
        with open(cluster.program, "w") as program:
            program.write(
                PROGRAM.replace("__EVENTS__", events)
                .replace("__REPLICAS__", replicas)
                .replace("__LINES__", str(args.lines))
                .replace("__LONG_PAUSE__", str(args.long / args.lines))
                .replace("__PAUSE__", str(args.pause))
            )
        os.chmod(cluster.program, 0o755)
        for name in names:
            cluster.start(name, ports[name])
        apps = [
            {"deployment_id": f"bench-{n}", "inventory": f"bench-inv-{n}",
             "deployment_secret": SECRET}
            for n in range(args.inventories)
        ]
        request = urllib.request.Request(
            cluster.bases["a"] + "/set-available-apps/",
            data=json.dumps(apps).encode(),
            headers={"Content-Type": "application/json",
                     "Authorization": "Bearer bench-faults-admin-token-0123"},
            method="POST",
        )
        urllib.request.urlopen(request, timeout=10).read()

        total = args.inventories * args.jobs
        answered, finals, lock = {}, {}, threading.Lock()
        kill_at = max(1, total // 3)
        killed = {}

        def inventory_worker(n):
            deployment = f"bench-{n}"
            for _ in range(args.jobs):
                deadline = time.time() + 120
                while time.time() < deadline:
                    _, started = cluster.call(
                        "/app-deploy/",
                        {"deployment_id": deployment, "deployment_secret": SECRET},
                        deadline,
                    )
                    if started.get("status") == "starting":
                        break
                    time.sleep(0.1)  # still busy with the job before
                else:
                    return
                job_id = started["job_id"]
                with lock:
                    answered[job_id] = deployment
                    if len(answered) == kill_at and not killed:
                        killed["at"] = time.time()
                while time.time() < deadline:
                    try:
                        _, status = cluster.call(
                            "/job-status/",
                            {"deployment_id": deployment, "deployment_secret": SECRET,
                             "job_id": job_id},
                            deadline,
                        )
                    except TimeoutError:
                        break
                    if status.get("status") in ("success", "error"):
                        with lock:
                            finals[job_id] = status
                        break
                    time.sleep(0.2)

        workers = [threading.Thread(target=inventory_worker, args=(n,))
                   for n in range(args.inventories)]
        started_at = time.time()
        for worker in workers:
            worker.start()

        # Kill one replica once a third of the jobs were answered.
        while "at" not in killed:
            time.sleep(0.01)
        victim = random.choice(names)
        victim_instance = f"{socket.gethostname()}:{cluster.bases[victim].rsplit(':', 1)[1]}"
        open_ids = redis_cli(redis_port, "SMEMBERS", PREFIX + "open").split()
        orphans = [job for job in open_ids
                   if redis_cli(redis_port, "HGET", PREFIX + "job:" + job, "launch_claim")
                   == victim_instance]
        cluster.kill(victim)
        kill_time = time.time()
        print(f"== killed replica {victim} ({victim_instance}) with SIGKILL after "
              f"{len(answered)} answered jobs; {len(orphans)} of its jobs were open", flush=True)

        # An orphan is adopted when another replica takes its claim; one whose
        # program ended (reporting to a live replica) first needs no adoption.
        adopted, ended = {}, set()
        while len(adopted) + len(ended) < len(orphans) and time.time() < kill_time + 120:
            for job in orphans:
                if job in adopted or job in ended:
                    continue
                fields = redis_cli(redis_port, "HMGET", PREFIX + "job:" + job,
                                   "launch_claim", "status").split("\n")
                claim = fields[0] if fields else ""
                status = fields[1] if len(fields) > 1 else ""
                if claim != victim_instance:
                    adopted[job] = time.time() - kill_time
                elif status in ("success", "error"):
                    ended.add(job)
            time.sleep(0.2)

        for worker in workers:
            worker.join()
        elapsed = time.time() - started_at

        doubled = missing = 0
        for job_id, status in finals.items():
            lines = [line for line in status.get("output", "").splitlines()
                     if line.startswith(f"{job_id} line ")]
            doubled += len(lines) - len(set(lines))
            missing += args.lines - len(set(lines))
        lost = [job for job in answered if job not in finals]
        errors = sum(1 for status in finals.values() if status["status"] != "success")
        print()
        print(f"== results ({os.cpu_count()} CPUs, {elapsed:.1f} s)")
        print(f"jobs asked:          {total}")
        print(f"jobs answered:       {len(answered)}")
        print(f"jobs final:          {len(finals)} ({errors} error)")
        print(f"jobs lost:           {len(lost)}")
        print(f"overlaps:            {overlaps(events)}")
        print(f"doubled lines:       {doubled}")
        print(f"missing lines:       {missing}")
        if orphans:
            slowest = max(adopted.values()) if adopted else float("nan")
            print(f"dead replica's jobs: {len(orphans)} open at the kill; {len(ended)} ended "
                  f"by their program's own report; {len(adopted)} adopted by another "
                  f"replica, the last {slowest:.1f} s after the kill")
        else:
            print("dead replica's jobs: none was open at the kill")
        return 0 if not lost and overlaps(events) == 0 and doubled == 0 else 1
    finally:
        cluster.stop_all()
        redis.terminate()
        redis.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
