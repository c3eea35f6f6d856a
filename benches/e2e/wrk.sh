# wrk helpers shared by benches/e2e/run and benches/e2e/kong-run (sourced).
# Needs: THREADS, CONNS, BODY (the JSON body), HDRS (array of -H args),
# PROXY (base URL), HERE (this directory).

run_wrk() {  # name kind seconds -> wrk output on stdout
  local name="$1" kind="$2" secs="$3"
  local args=(-t"$THREADS" -c"$CONNS" -d"${secs}s" --latency --timeout 5s)
  if [[ "$kind" == post ]]; then
    BENCH_BODY_FILE="$BODY" timeout $((secs + 20)) wrk "${args[@]}" -s "$HERE/post.lua" "$PROXY/$name"
  else
    timeout $((secs + 20)) wrk "${args[@]}" "${HDRS[@]}" "$PROXY/$name"
  fi
}

# wrk output -> "rps p50_us p99_us requests non2xx socket_errors"
parse_wrk() {
  awk '
    function us(v) {
      if (v ~ /us$/) return v + 0
      if (v ~ /ms$/) return (v + 0) * 1000
      if (v ~ /s$/)  return (v + 0) * 1000000
      return v + 0
    }
    /^Requests\/sec:/ { rps = $2 }
    $1 == "50%" { p50 = us($2) }
    $1 == "99%" { p99 = us($2) }
    / requests in / { reqs = $1 }
    /Non-2xx or 3xx responses:/ { non2xx = $NF }
    /Socket errors:/ { gsub(/,/, ""); errs = $4 + $6 + $8 + $10 }
    END { printf "%s %s %s %s %d %d\n", rps, p50, p99, reqs, non2xx, errs }
  '
}

