#!/usr/bin/env bash
# End-to-end checks of the Redis queue: an API node (sdcpu serve --no-worker) and workers (sdcpu worker) sharing
# Debian's redis-server, started here on a free loopback port and stopped at the end.
#   1. A worker killed (-9) mid-job: another worker takes the job over after the visibility timeout and finishes it,
#      with the stored seed, so the image is byte-identical to `sdcpu generate`.
#   2. 1000 jobs across three workers that are killed and restarted at random: every job succeeds, once.
#   3. Redis goes away: submissions get 503, the API node reconnects by itself once Redis is back.
# Usage: service_redis_test.sh SDCPU_BINARY SOURCE_DIR
set -uo pipefail
sdcpu=$1 src=$2
model="$src/models/tiny-sd"
py=/usr/bin/python3
command -v redis-server >/dev/null || { echo "redis-server is not installed (scripts/setup.sh installs it)"; exit 1; }
tmp=$(mktemp -d)
export SDCPU_WEIGHT_CACHE="$tmp/weights"  # the default weight cache, shared by the workers below; never ~/.cache
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
passed=0 failed=0
check() {  # check NAME CONDITION-EXIT-CODE
  if [ "$2" -eq 0 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAIL: $1"; fi
}

free_port() { $py -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
redis_port=$(free_port)
queue="redis://127.0.0.1:$redis_port/0"
start_redis() {
  redis-server --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly yes --appendfsync always \
    --dir "$tmp" --logfile "$tmp/redis.log" --daemonize no &
  redis_pid=$!
  pids+=("$redis_pid")
  for _ in $(seq 100); do redis-cli -p "$redis_port" ping 2>/dev/null | grep -q PONG && return 0; sleep 0.1; done
  echo "redis-server did not start"; return 1
}
start_redis || exit 1

# The API node.
"$sdcpu" serve --queue "$queue" --no-worker --model "tiny=$model" --listen 127.0.0.1:0 >"$tmp/api.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  port=$(sed -nE 's/.*listening on http:\/\/127\.0\.0\.1:([0-9]+).*/\1/p' "$tmp/api.log")
  [ -n "$port" ] && break
  sleep 0.1
done
[ -n "$port" ] || { echo "the API node did not start:"; cat "$tmp/api.log"; exit 1; }
api="http://127.0.0.1:$port"

# start_worker NAME [ARGS...]: a worker with a 2 s visibility timeout (heartbeat every 1/12 of it), one thread.
start_worker() {
  "$sdcpu" worker --queue "$queue" --model "tiny=$model" --name "$1" --threads 1 --visibility-timeout 2 "${@:2}" \
    >>"$tmp/worker-$1.log" 2>&1 &
  echo $!
}
job_field() { curl -s "$api/v1/jobs/$1" | $py -c "import json,sys; print(json.load(sys.stdin)$2)"; }
submit() { curl -s -XPOST "$api/v1/jobs" -d "$1" | $py -c 'import json,sys; print(json.load(sys.stdin)["id"])'; }
wait_status() {  # wait_status ID STATUS SECONDS
  for _ in $(seq $(($3 * 10))); do [ "$(job_field "$1" '["status"]')" = "$2" ] && return 0; sleep 0.1; done
  return 1
}

# ---- 1. a worker dies mid-job; another finishes it
a=$(start_worker a)
pids+=("$a")
long='{"prompt": "a lighthouse", "steps": 150, "width": 128, "height": 128, "seed": 1234, "sampler": "euler_a"}'
id=$(submit "$long")
wait_status "$id" running 30
check "the job runs on worker a" $?
b=$(start_worker b)
pids+=("$b")
sleep 0.5
kill -9 "$a"
wait_status "$id" succeeded 60
check "worker b finishes the job of the killed worker a" $?
[ "$(job_field "$id" '["attempts"]')" = 2 ]
check "the job ran twice (attempts 2)" $?
curl -s -o "$tmp/took-over.png" "$api/v1/jobs/$id/images/0.png"
"$sdcpu" generate --model "$model" --prompt "a lighthouse" --steps 150 --width 128 --height 128 --seed 1234 \
  --sampler euler_a -q -o "$tmp/generated.png" >/dev/null
cmp -s "$tmp/took-over.png" "$tmp/generated.png"
check "the image is byte-identical to sdcpu generate's (same seed)" $?
kill -9 "$b"

# ---- 2. 1000 jobs across three workers killed and restarted at random
jobs=1000
$py - "$api" "$jobs" >"$tmp/ids.txt" <<'EOF'
import json, sys, urllib.request
api, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    body = json.dumps({"prompt": "a red cube", "steps": 2, "width": 64, "height": 64, "seed": i}).encode()
    req = urllib.request.Request(api + "/v1/jobs", data=body, method="POST")
    print(json.load(urllib.request.urlopen(req))["id"])
EOF
[ "$(wc -l <"$tmp/ids.txt")" -eq "$jobs" ]
check "$jobs jobs submitted" $?
declare -A workers
# w2 batches up to 4 jobs per UNet call (--max-batch): the jobs below all share their settings, so it runs them in
# batches taken from the stream, and a kill of w2 interrupts up to 4 jobs at once.
batch_args() { [ "$1" = w2 ] && echo --max-batch 4; }
for w in w1 w2 w3; do workers[$w]=$(start_worker "$w" $(batch_args "$w")); pids+=("${workers[$w]}"); done
kills=0
deadline=$((SECONDS + 150))
while [ $SECONDS -lt $deadline ]; do
  done_count=$(curl -s "$api/metrics" | sed -nE 's/^sdcpu_jobs\{status="succeeded"\} ([0-9]+)/\1/p')
  [ "${done_count:-0}" -ge $((jobs + 1)) ] && break  # + the job of part 1
  sleep 0.$((RANDOM % 9 + 1))
  if [ $kills -lt 12 ] && [ $((RANDOM % 3)) -eq 0 ]; then
    w=w$((RANDOM % 3 + 1))
    kill -9 "${workers[$w]}" 2>/dev/null
    kills=$((kills + 1))
    workers[$w]=$(start_worker "$w-$kills" $(batch_args "$w"))
    pids+=("${workers[$w]}")
  fi
done
$py - "$api" "$tmp/ids.txt" "$kills" <<'EOF'
import json, sys, urllib.request
api, ids, kills = sys.argv[1], open(sys.argv[2]).read().split(), int(sys.argv[3])
jobs = [json.load(urllib.request.urlopen(api + "/v1/jobs/" + i)) for i in ids]
status = {}
for j in jobs:
    status[j["status"]] = status.get(j["status"], 0) + 1
retried = sum(j["attempts"] > 1 for j in jobs)
extra = sum(j["attempts"] - 1 for j in jobs)
print(f"  {len(jobs)} jobs: {status}; {kills} kills; {retried} jobs ran again after a kill ({extra} extra runs)")
together = {}
for j in jobs:
    together[j["started_ms"]] = together.get(j["started_ms"], 0) + 1
print(f"  jobs started in the same millisecond (batches): {sum(n for n in together.values() if n > 1)}")
ok = status.get("succeeded", 0) == len(jobs)
ok &= all(len(j["images"]) == 1 and j["images"][0]["seed"] == j["request"]["seed"] for j in jobs)
ok &= extra <= 4 * kills  # each kill interrupts at most one batch of at most 4 jobs
sys.exit(0 if ok else 1)
EOF
check "every one of $jobs jobs succeeded once, with its seed, across $kills worker kills" $?
for w in w1 w2 w3; do kill -9 "${workers[$w]}" 2>/dev/null; done

# ---- 3. Redis goes away and comes back
kill -9 "$redis_pid"
wait "$redis_pid" 2>/dev/null
code=$(curl -s -o "$tmp/503.json" -w '%{http_code}' -XPOST "$api/v1/jobs" -d '{"prompt": "x", "steps": 2}')
[ "$code" = 503 ] && grep -q "redis" "$tmp/503.json"
check "without Redis a submission gets 503 naming Redis (got $code: $(cat "$tmp/503.json"))" $?
code=$(curl -s -o /dev/null -w '%{http_code}' "$api/readyz")
[ "$code" = 503 ]
check "without Redis /readyz is 503" $?
start_redis
id2=$(submit '{"prompt": "x", "steps": 2, "width": 64, "height": 64, "seed": 5}')
[ -n "$id2" ]
check "the API node reconnects: a submission is accepted again" $?
[ "$(job_field "$(head -1 "$tmp/ids.txt")" '["status"]')" = succeeded ]
check "what Redis kept (appendonly) is still there" $?

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
