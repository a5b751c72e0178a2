# Sourced by scripts/bench-history.sh and scripts/bench-status-page.sh,
# after scripts/bench-lib.sh (with `root`, `backend`, `jobs`, `deployments` and `bench_name` set): builds the release binary and `seed_history`, starts redis-server
# for the redis backend, writes `jobs` finished jobs over `deployments`
# deployments, lists them all in the app list, and starts `enac-cd serve`
# on that store. Sets `base`, `admin_token`, `viewer_token`, `work`,
# `seed_seconds`, `service_pid`, `redis_pid` (stopped on exit by PID).

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

echo "== cargo build --release --bin enac-cd --example seed_history"
cargo build --release --quiet --bin enac-cd --example seed_history
binary=$root/target/release/enac-cd
seeder=$root/target/release/examples/seed_history

prefix=enac-cd:
store_env=()
store_args=()
if [ "$backend" = redis ]; then
  start_redis "$work/redis.log"
  redis_url="redis://127.0.0.1:$redis_port/0"
  store_env=(CD_REDIS_URL="$redis_url" CD_REDIS_PREFIX="$prefix")
  store_args=(--redis-url "$redis_url" --prefix "$prefix")
else
  echo "== embedded store in $work/data"
  store_args=(--data-dir "$work/data")
fi

echo "== seeding $jobs jobs over $deployments deployments"
seed_started=$(date +%s.%N)
"$seeder" "${store_args[@]}" --jobs "$jobs" --deployments "$deployments"
seed_seconds=$(awk -v a="$seed_started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')

{
  echo '['
  for ((d = 0; d < deployments; d++)); do
    name=$(printf '%02d' "$d")
    sep=$([ "$d" -lt $((deployments - 1)) ] && echo , || true)
    echo "{\"deployment_id\":\"bench-app-$name\",\"inventory\":\"bench-inv-$name\"}$sep"
  done
  echo ']'
} >"$work/apps.json"

admin_token=bench-admin-token-0123456789
viewer_token=bench-viewer-token-0123456789
service_port=$(free_port)
base=http://127.0.0.1:$service_port
echo "== enac-cd serve on $base"
# The seeded jobs carry their own expiry (30 days); the service's
# CD_JOB_TTL matches it, so what it writes itself lives as long.
env "${store_env[@]}" \
  CD_LISTEN=127.0.0.1:$service_port \
  CD_LAUNCHER=process \
  CD_PROCESS_COMMAND=$root/tests/fixtures/fake-ansible \
  CD_DATA_DIR=$work/data \
  CD_APPS_FILE=$work/apps.json \
  CD_POLICY_DIR=$root/tests/fixtures/no-policies \
  CD_ADMIN_TOKEN=$admin_token \
  CD_VIEWER_TOKEN=$viewer_token \
  CD_JOB_TTL=30d \
  "$binary" serve >"$work/service.log" 2>&1 &
service_pid=$!
if ! wait_for 30 "enac-cd to answer GET /" curl -fsS "$base/"; then
  cat "$work/service.log" >&2
  exit 1
fi
