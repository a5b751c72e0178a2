#!/usr/bin/env bash
# By-hand benchmark of POST /webhooks/github (not a test), next to Debian's
# `webhook` (adnanh/webhook) checking the same HMAC.
#
#   bash scripts/bench-webhooks.sh [DELIVERIES]     (default: 100000)
#
# Builds the release binary and starts `enac-cd serve` (embedded store,
# process launcher running the fake ansible, one policy file with one GitHub
# rule, app `bench` on inventory `ok-bench`) on a free loopback port, then
# runs `wrk -t2 -c32 -d10s --latency` with scripts/wrk/webhook-deliveries.lua:
#
#   (a) replayed: one signed push, same X-GitHub-Delivery and body every
#       time; after it was accepted once, every request is a duplicate
#       (signature check, dedupe lookup, 200 {"status":"duplicate"}).
#   (b) accepted: every request a new delivery. The service dedupes by
#       delivery id AND body digest, so each one needs its own id and body,
#       hence its own HMAC, which wrk's LuaJIT cannot compute. DELIVERIES
#       signed requests (each push with its own `after` sha and delivery id)
#       are made beforehand with python3 and the Lua script sends each once,
#       thread i taking lines i, i+2, …. If wrk runs out, it wraps around and
#       the repeats are duplicates: the script reports the wrap count and the
#       answers by status, so a mixed run is visible, and says to raise
#       DELIVERIES. Accepted deliveries go through the lifecycle with the
#       policy's on_busy = "queue": one running job, one queued, the rest
#       join the queued one (no process per request).
#   (c) adnanh/webhook 2.8 on another loopback port, same replayed signed
#       push, hooks.json with a `payload-hmac-sha256` rule on
#       X-Hub-Signature-256 running /bin/true: it has no dedupe, so every
#       request passes the HMAC and forks /bin/true.
#
# Prints requests/s and p99 for each. Needs wrk, curl, python3 and webhook;
# installs nothing. Everything it starts is stopped by PID on exit.
# Note: wrk runs on the same machine and takes CPU from the services.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
deliveries=${1:-100000}
if ! [[ "$deliveries" =~ ^[0-9]+$ ]] || ((deliveries < 2)); then
  echo "usage: $0 [DELIVERIES >= 2]" >&2
  exit 2
fi

bench_name=bench-webhooks
source scripts/bench-lib.sh
need wrk curl python3 webhook

work=$(mktemp -d)
service_pid=
hook_pid=

cleanup() {
  stop "$service_pid"
  stop "$hook_pid"
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== cargo build --release"
cargo build --release --quiet
binary=$root/target/release/enac-cd

secret=bench-hook-secret-0123456789
admin_token=bench-admin-token-0123456789
export BENCH_HOOK_SECRET=$secret

mkdir -p "$work/policies"
cat >"$work/policies/bench.toml" <<'EOF'
deployment_id = "bench"
on_busy = "queue"

[[webhook]]
provider = "github"
secret_env = "BENCH_HOOK_SECRET"
events = ["push"]
[webhook.match]
"/repository/id" = 123456
"/ref" = "refs/heads/main"
"/deleted" = false
EOF
# No deployment secret: only the policy can deploy it.
echo '[{"deployment_id":"bench","inventory":"ok-bench"}]' >"$work/apps.json"

echo "== signing 1 replayed and $deliveries distinct pushes (python3)"
python3 - "$root/webhooks/github-push.json" "$work" "$deliveries" <<'EOF'
import hashlib, hmac, json, os, sys, uuid

sample, work, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
secret = os.environ["BENCH_HOOK_SECRET"].encode()
with open(sample, encoding="utf-8") as handle:
    body = json.load(handle)["body"]

def line(delivery, payload):
    raw = json.dumps(payload, separators=(",", ":"))
    digest = hmac.new(secret, raw.encode(), hashlib.sha256).hexdigest()
    return f"{delivery}\tsha256={digest}\t{raw}\n"

with open(f"{work}/replayed.tsv", "w", encoding="utf-8") as out:
    out.write(line("bench-replayed-delivery", body))
with open(f"{work}/accepted.tsv", "w", encoding="utf-8") as out:
    for n in range(count):
        body["after"] = f"{n + 1:040x}"
        out.write(line(str(uuid.uuid4()), body))
EOF

service_port=$(free_port)
base=http://127.0.0.1:$service_port
echo "== enac-cd serve on $base"
env -u CD_REDIS_URL -u CD_CONFIG \
  CD_LISTEN=127.0.0.1:$service_port \
  CD_LAUNCHER=process \
  CD_PROCESS_COMMAND=$root/tests/fixtures/fake-ansible \
  CD_DATA_DIR=$work/data \
  CD_APPS_FILE=$work/apps.json \
  CD_POLICY_DIR=$work/policies \
  CD_ADMIN_TOKEN=$admin_token \
  CD_PUBLIC_URL=$base \
  "$binary" serve >"$work/service.log" 2>&1 &
service_pid=$!
if ! wait_for 20 "enac-cd to answer GET /" curl -fsS "$base/"; then
  cat "$work/service.log" >&2
  exit 1
fi

# post_line FILE URL: posts the first delivery of FILE, prints "<status> <body>".
post_line() {
  local delivery signature body
  IFS=$'\t' read -r delivery signature body <"$1"
  curl -sS -o "$work/answer.json" -w '%{http_code} ' -H 'Content-Type: application/json' \
    -H 'X-GitHub-Event: push' -H "X-GitHub-Delivery: $delivery" \
    -H "X-Hub-Signature-256: $signature" --data-binary "$body" "$2"
  cat "$work/answer.json"
  echo
}

first=$(post_line "$work/replayed.tsv" "$base/webhooks/github")
echo "== first delivery: $first"
if ! grep -q '^202 .*"status":"accepted"' <<<"$first"; then
  echo "bench-webhooks: the signed push was not accepted" >&2
  cat "$work/service.log" >&2
  exit 1
fi
again=$(post_line "$work/replayed.tsv" "$base/webhooks/github")
if ! grep -q '^200 {"status":"duplicate"}' <<<"$again"; then
  echo "bench-webhooks: the replay was not a duplicate: $again" >&2
  exit 1
fi

# run_wrk NAME MODE FILE URL: prints wrk's report, keeps it in $work/NAME.txt.
run_wrk() {
  echo
  echo "== BENCH_MODE=$2 wrk -t2 -c32 -d10s --latency -s scripts/wrk/webhook-deliveries.lua $4"
  BENCH_MODE=$2 BENCH_REQUESTS=$3 BENCH_THREADS=2 \
    wrk -t2 -c32 -d10s --latency -s scripts/wrk/webhook-deliveries.lua "$4" | tee "$work/$1.txt"
}
rps_of() { awk '/^Requests\/sec:/ {print $2}' "$work/$1.txt"; }
p99_of() { to_ms "$(awk '$1 == "99%" {print $2}' "$work/$1.txt")"; }
statuses_of() { sed -n 's/^statuses: *//p' "$work/$1.txt"; }
wraps_of() { awk '/^wrapped:/ {print $2}' "$work/$1.txt"; }

run_wrk replayed fixed "$work/replayed.tsv" "$base/webhooks/github"
run_wrk accepted cycle "$work/accepted.tsv" "$base/webhooks/github"
load=$(curl -fsS -H "Authorization: Bearer $admin_token" "$base/load/?periods=1_hour:3600")
rss_kib=$(awk '/^VmRSS:/ {print $2}' "/proc/$service_pid/status")
stop "$service_pid"
service_pid=

hook_port=$(free_port)
hook_url=http://127.0.0.1:$hook_port/hooks/bench
cat >"$work/hooks.json" <<EOF
[
  {
    "id": "bench",
    "execute-command": "/bin/true",
    "response-message": "accepted",
    "trigger-rule-mismatch-http-response-code": 401,
    "trigger-rule": {
      "match": {
        "type": "payload-hmac-sha256",
        "secret": "$secret",
        "parameter": {"source": "header", "name": "X-Hub-Signature-256"}
      }
    }
  }
]
EOF
echo
echo "== webhook $(webhook -version | awk '{print $NF}') on $hook_url"
webhook -hooks "$work/hooks.json" -ip 127.0.0.1 -port "$hook_port" >"$work/webhook.log" 2>&1 &
hook_pid=$!
if ! wait_for 20 "webhook to listen" listening "$hook_port"; then
  cat "$work/webhook.log" >&2
  exit 1
fi
checked=$(post_line "$work/replayed.tsv" "$hook_url")
echo "== signed push to webhook: $checked"
if ! grep -q '^200 accepted' <<<"$checked"; then
  echo "bench-webhooks: webhook did not accept the signed push" >&2
  cat "$work/webhook.log" >&2
  exit 1
fi
printf 'x\tsha256=%064d\t{}\n' 0 >"$work/unsigned.tsv"
refused=$(post_line "$work/unsigned.tsv" "$hook_url")
if grep -q '^200' <<<"$refused"; then
  echo "bench-webhooks: webhook accepted a wrong signature: $refused" >&2
  exit 1
fi
run_wrk adnanh fixed "$work/replayed.tsv" "$hook_url"
stop "$hook_pid"
hook_pid=

echo
echo "== results ($(nproc) CPUs, wrk -t2 -c32 -d10s on the same machine)"
row() { # label name
  printf '%-44s %10s req/s  p99 %8s ms  answers: %s\n' "$1" "$(rps_of "$2")" "$(p99_of "$2")" "$(statuses_of "$2")"
}
row "enac-cd (a) replayed -> duplicate" replayed
row "enac-cd (b) new deliveries -> accepted" accepted
row "adnanh/webhook, same HMAC, runs /bin/true" adnanh
accepted_wraps=$(wraps_of accepted)
if [ "${accepted_wraps:-0}" != 0 ]; then
  echo "note: (b) used up its $deliveries signed deliveries ($accepted_wraps wrap-arounds); the repeats were duplicates. Run again with more: $0 $((deliveries * 3))"
fi
echo "enac-cd jobs in the store after the runs: $load"
echo "enac-cd RSS after the runs: $(awk -v k="$rss_kib" 'BEGIN { printf "%.1f", k / 1024 }') MiB"
