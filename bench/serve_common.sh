# Sourced by serve_load.sh and serve_batching.sh: starting and stopping `sdcpu serve` on a free loopback port.
# Needs SDCPU (the sdcpu binary); START_TIMEOUT_S bounds the start (default 600 s: a first start may write the
# weight cache).

SERVER_PID=""
URL=""

# start_server LOG ARGS...: runs `$SDCPU serve --listen 127.0.0.1:0 ARGS...` with its output in LOG.out and
# LOG.err; returns once /healthz answers, with SERVER_PID and URL set. Exits the script when the server exits or
# does not come up in time.
start_server() {
  local log=$1
  shift
  "$SDCPU" serve --listen 127.0.0.1:0 "$@" >"$log.out" 2>"$log.err" &
  SERVER_PID=$!
  URL=""
  for _ in $(seq $((${START_TIMEOUT_S:-600} * 10))); do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      echo "$(basename "$0"): the server exited:" >&2
      cat "$log.err" >&2
      exit 1
    fi
    URL=$(sed -n 's|^sdcpu serve: listening on \(http://127\.0\.0\.1:[0-9]*\).*|\1|p' "$log.out" | head -1)
    [[ -n $URL ]] && break
    sleep 0.1
  done
  [[ -n $URL ]] || { echo "$(basename "$0"): no listening line within ${START_TIMEOUT_S:-600}s" >&2; exit 1; }
  for _ in $(seq 100); do
    curl -sf --max-time 2 "$URL/healthz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "$(basename "$0"): $URL/healthz did not answer within 10 s" >&2
  exit 1
}

# stop_server: SIGTERM to the server, SIGKILL when it has not exited 10 s later.
stop_server() {
  if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  SERVER_PID=""
}
