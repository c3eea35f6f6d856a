# Sourced by the benchmark scripts: start_redis DIR starts a redis-server
# on 127.0.0.1 with its files in DIR, on a port below the kernel's
# ephemeral range (where outgoing connections of earlier runs cannot hold
# it), trying other ports when one is taken. Sets REDIS_PORT and REDIS_PID;
# the caller stops it.
start_redis() {
  local dir="$1" attempt
  for attempt in 1 2 3 4 5 6 7 8 9 10; do
    REDIS_PORT=$(( 11000 + RANDOM % 9000 ))
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" \
      >"$dir/redis.log" 2>&1 &
    REDIS_PID=$!
    for _ in $(seq 1 50); do
      redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && return 0
      kill -0 "$REDIS_PID" 2>/dev/null || break # it exited: port taken
      sleep 0.1
    done
    kill "$REDIS_PID" 2>/dev/null || true
    wait "$REDIS_PID" 2>/dev/null || true
  done
  tail -n 5 "$dir/redis.log" >&2
  REDIS_PID=""
  return 1
}
