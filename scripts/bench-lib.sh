# Helpers sourced by the by-hand benchmark scripts. Set `bench_name` first.
# They start nothing; each script stops what it starts by PID.

# need TOOL...: refuses to run (with the apt-get line) when one is missing.
need() {
  local tool
  for tool in "$@"; do
    if ! command -v "$tool" >/dev/null 2>&1; then
      echo "$bench_name: $tool is missing; install it with: apt-get install $tool" >&2
      exit 1
    fi
  done
}

stop() { # pid
  if [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; then
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
  fi
}

# A loopback port nothing listens on (checked by connecting to it).
free_port() {
  local port
  for _ in $(seq 1 200); do
    port=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return 0
    fi
  done
  echo "$bench_name: no free port found" >&2
  return 1
}

# wait_for SECONDS WHAT COMMAND...: polls COMMAND until it succeeds.
wait_for() {
  local seconds=$1 what=$2
  shift 2
  local until=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= until)); then
      echo "$bench_name: timed out waiting for $what" >&2
      return 1
    fi
    sleep 0.1
  done
}

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Converts wrk's latency (850.00us, 1.23ms, 1.02s) to milliseconds.
to_ms() {
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); print v / 1000 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); print v + 0 }
    else if (v ~ /m$/) { sub(/m$/, "", v); print v * 60000 }
    else if (v ~ /s$/) { sub(/s$/, "", v); print v * 1000 }
    else { print "nan" } }'
}

# pick_backend DEFAULT [ARG]: prints `redis` or `embedded` (ARG, else
# DEFAULT); anything else fails with the usage line.
pick_backend() {
  local backend=${2:-$1}
  case "$backend" in
    redis | embedded) echo "$backend" ;;
    *) echo "usage: $0 [redis|embedded] (default: $1)" >&2; return 2 ;;
  esac
}

# came_up PID SECONDS COMMAND...: polls COMMAND while PID lives; fails
# at once when PID is gone (its port was taken meanwhile: free_port draws
# from the range of outgoing ports, which a thousand followers use).
came_up() {
  local pid=$1 until=$((SECONDS + $2))
  shift 2
  until "$@" >/dev/null 2>&1; do
    if ! kill -0 "$pid" 2>/dev/null || ((SECONDS >= until)); then
      return 1
    fi
    sleep 0.1
  done
  kill -0 "$pid" 2>/dev/null
}

# start_redis LOG: a throwaway redis-server on a free loopback port (no
# persistence), tried on another port when one was taken meanwhile; sets
# `redis_port` and `redis_pid` (the caller stops it by PID), or exits.
start_redis() {
  local log=$1 attempt
  for attempt in 1 2 3 4 5; do
    redis_port=$(free_port)
    echo "== redis-server on 127.0.0.1:$redis_port"
    redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
      --protected-mode yes >"$log" 2>&1 &
    redis_pid=$!
    came_up "$redis_pid" 10 listening "$redis_port" && return 0
    stop "$redis_pid"
    redis_pid=
  done
  cat "$log" >&2
  exit 1
}
