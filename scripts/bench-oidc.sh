#!/usr/bin/env bash
# By-hand benchmark of OIDC token verification with a warm key cache (not a
# test): a local issuer (python's http.server serving a JWKS made from an
# RSA key openssl generates), one token minted with openssl, one job started
# with it, then `wrk -t2 -c32 -d10s --latency` on /job-status/ with the token
# as bearer: each request verifies the RS256 signature and every claim and
# matches the policies. Prints verifications (requests) per second and p99.
# Stops everything it started by PID. Installs nothing.
#
#   bash scripts/bench-oidc.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

bench_name=bench-oidc
source scripts/bench-lib.sh
need wrk openssl python3 curl

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }

echo "== cargo build --release"
cargo build --release --quiet

issuer_port=$(free_port)
iss="http://127.0.0.1:$issuer_port"
mkdir -p "$work/issuer" "$work/policies"
openssl genrsa -out "$work/key.pem" 2048 2>/dev/null
modulus=$(openssl rsa -in "$work/key.pem" -noout -modulus | cut -d= -f2)
n=$(printf '%s' "$modulus" | python3 -c 'import sys, binascii; sys.stdout.buffer.write(binascii.unhexlify(sys.stdin.read().strip()))' | b64url)
printf '{"keys":[{"kty":"RSA","kid":"bench","alg":"RS256","use":"sig","n":"%s","e":"AQAB"}]}' "$n" >"$work/issuer/jwks.json"
python3 -m http.server "$issuer_port" --bind 127.0.0.1 --directory "$work/issuer" >/dev/null 2>&1 &
pids+=($!)
wait_for 10 "the issuer" curl -fsS "$iss/jwks.json"

now=$(date +%s)
header=$(printf '{"alg":"RS256","typ":"JWT","kid":"bench"}' | b64url)
payload=$(printf '{"iss":"%s","aud":"enac-cd","sub":"repo:epfl-enac/bench:ref:refs/heads/main","repository":"epfl-enac/bench","repository_id":"123456","ref":"refs/heads/main","sha":"0d1a26e6","actor":"bench","jti":"bench-%s","iat":%s,"nbf":%s,"exp":%s}' \
  "$iss" "$now" "$now" "$now" "$((now + 3000))" | b64url)
signature=$(printf '%s.%s' "$header" "$payload" | openssl dgst -sha256 -sign "$work/key.pem" -binary | b64url)
token="$header.$payload.$signature"

cat >"$work/config.toml" <<TOML
[[issuer]]
name = "bench"
iss = "$iss"
jwks_uri = "$iss/jwks.json"
audience = "enac-cd"
max_lifetime = "1h"
TOML
cat >"$work/policies/bench.toml" <<TOML
deployment_id = "bench"
[[oidc]]
issuer = "bench"
[oidc.claims]
repository_id = "123456"
ref = "refs/heads/main"
TOML
echo '[{"deployment_id":"bench","inventory":"ok-bench"}]' >"$work/apps.json"

port=$(free_port)
base=http://127.0.0.1:$port
echo "== enac-cd serve on $base (embedded store), issuer $iss"
CD_LISTEN=127.0.0.1:$port CD_LAUNCHER=process CD_PROCESS_COMMAND=$root/tests/fixtures/fake-ansible \
  CD_DATA_DIR=$work/data CD_APPS_FILE=$work/apps.json CD_POLICY_DIR=$work/policies \
  target/release/enac-cd serve --config "$work/config.toml" >"$work/service.log" 2>&1 &
service_pid=$!
pids+=("$service_pid")
wait_for 20 "enac-cd" curl -fsS "$base/healthz"

started=$(curl -fsS -H "Authorization: Bearer $token" -H 'Content-Type: application/json' -d '{}' "$base/app-deploy/")
job_id=$(sed -n 's/.*"job_id":"\([^"]*\)".*/\1/p' <<<"$started")
if [ -z "$job_id" ]; then echo "bench-oidc: no job started: $started" >&2; cat "$work/service.log" >&2; exit 1; fi
final() { curl -fsS -H "Authorization: Bearer $token" -H 'Content-Type: application/json' -d "{\"job_id\":\"$job_id\"}" "$base/job-status/" | grep -Eq '"status":"(success|error)"'; }
wait_for 30 "job $job_id to end" final
echo "== job $job_id started and read with the OIDC token"

echo "== wrk -t2 -c32 -d10s --latency -s scripts/wrk/oidc-status.lua $base/job-status/"
BENCH_TOKEN=$token BENCH_JOB_ID=$job_id wrk -t2 -c32 -d10s --latency -s scripts/wrk/oidc-status.lua "$base/job-status/" | tee "$work/wrk.txt"
rss=$(awk '/^VmRSS:/ {printf "%.1f", $2 / 1024}' "/proc/$service_pid/status")
echo
echo "== results ($(nproc) CPUs, wrk on the same machine)"
echo "token verifications (/job-status/ with an OIDC bearer): $(awk '/^Requests\/sec:/ {print $2}' "$work/wrk.txt") req/s," \
  "p99 $(awk '$1 == "99%" {print $2}' "$work/wrk.txt"), non-2xx $(awk '/Non-2xx/ {n = $NF} END {print n + 0}' "$work/wrk.txt"), service RSS $rss MiB"
