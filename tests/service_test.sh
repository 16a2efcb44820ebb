#!/usr/bin/env bash
# End-to-end checks of `sdcpu serve`: every route against the same images `sdcpu generate` makes, progress events,
# cancellation, idempotency, durability across kill -9, bad input, API keys and the queue limits, and the official
# OpenAI client. Servers listen on 127.0.0.1 only, on free ports, with data folders under a temporary folder.
# Usage: service_test.sh SDCPU_BINARY SOURCE_DIR [BUILD_DIR]   (BUILD_DIR: where the npm package is cached)
set -uo pipefail
sdcpu=$1 src=$2 build=${3:-}
py=/usr/bin/python3
model="$src/models/tiny-sd"
tmp=$(mktemp -d)
export SDCPU_WEIGHT_CACHE="$tmp/weights"  # the default weight cache, shared by the servers below; never ~/.cache
passed=0 failed=0
started=()  # every process this script started in the background

cleanup() {
  local p
  for p in "${started[@]}"; do kill -9 "$p" 2>/dev/null; done
  for p in "${started[@]}"; do wait "$p" 2>/dev/null; done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 143' TERM INT

ok() { passed=$((passed + 1)); }
fail() { failed=$((failed + 1)); echo "FAIL: $*"; }
timings="" section_name="" section_start=$SECONDS
section() {  # section NAME: the seconds each part took, printed at the end
  [ -n "$section_name" ] && timings+=" $section_name $((SECONDS - section_start))s"
  section_name=$1 section_start=$SECONDS
}
finish() {
  section ""
  echo "seconds per part:$timings (total ${SECONDS}s)"
  echo "$passed passed, $failed failed"
  [ "$failed" -eq 0 ]
  exit
}

# ---- helpers ------------------------------------------------------------------------------------------------

# Python helpers (stdlib only): JSON checks, PNG chunks, base64, the bulk submissions of the durability check.
cat >"$tmp/h.py" <<'EOF'
import base64, json, struct, sys, time, urllib.request, zlib

def png(data):
    """(width, height, {keyword: text}) of a PNG, checking its signature, chunk CRCs, IHDR first and IEND last."""
    assert data[:8] == b'\x89PNG\r\n\x1a\n', 'not a PNG signature'
    pos, types, texts, size = 8, [], {}, None
    while pos < len(data):
        n, = struct.unpack('>I', data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        crc, = struct.unpack('>I', data[pos + 8 + n:pos + 12 + n])
        assert zlib.crc32(kind + body) & 0xffffffff == crc, 'bad CRC'
        types.append(kind)
        if kind == b'IHDR':
            size = struct.unpack('>II', body[:8])
        elif kind == b'tEXt':
            k, v = body.split(b'\0', 1)
            texts[k.decode('latin-1')] = v.decode('latin-1')
        elif kind == b'iTXt':
            k, rest = body.split(b'\0', 1)
            compressed, rest = rest[0], rest[2:]
            _, rest = rest.split(b'\0', 1)
            _, text = rest.split(b'\0', 1)
            texts[k.decode('latin-1')] = (zlib.decompress(text) if compressed else text).decode('utf-8')
        pos += 12 + n
        if kind == b'IEND':
            break
    assert types[0] == b'IHDR' and types[-1] == b'IEND' and pos == len(data), 'bad chunk order'
    return size[0], size[1], texts

def pngfile(path):
    with open(path, 'rb') as f:
        return png(f.read())

def b64png(s):
    return png(base64.b64decode(s, validate=True))

def load(path):
    with open(path, 'rb') as f:
        return json.loads(f.read())

def sse(path):
    """The events of a text/event-stream file: [(event, parsed data)]."""
    events = []
    with open(path, encoding='utf-8') as f:
        for block in f.read().split('\n\n'):
            if not block.strip():
                continue
            fields = dict(line.split(': ', 1) for line in block.split('\n') if ': ' in line)
            events.append((fields.get('event'), json.loads(fields.get('data', 'null'))))
    return events

def call(port, method, path, body=None):
    """One request on a new connection (see keepalive below for why not one connection)."""
    import http.client
    conn = http.client.HTTPConnection('127.0.0.1', port, timeout=10)
    try:
        conn.request(method, path, body, {'Content-Type': 'application/json'} if body else {})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()

cmd, args = sys.argv[1], sys.argv[2:]
if cmd == 'check':  # check FILE EXPR: exit 0 when EXPR (with j = the file's JSON) is true
    try:
        j = load(args[0])
        sys.exit(0 if eval(args[1]) else 1)
    except SystemExit:
        raise
    except Exception as e:
        print(f'  ({type(e).__name__}: {e})')
        sys.exit(1)
elif cmd == 'get':  # get FILE EXPR: prints EXPR (strings bare)
    j = load(args[0])
    v = eval(args[1])
    print(v if isinstance(v, str) else json.dumps(v))
elif cmd == 'pngcheck':  # pngcheck FILE EXPR: exit 0 when EXPR (with w, h, t = the PNG's size and texts) is true
    try:
        w, h, t = pngfile(args[0])
        sys.exit(0 if eval(args[1]) else 1)
    except SystemExit:
        raise
    except Exception as e:
        print(f'  ({type(e).__name__}: {e})')
        sys.exit(1)
elif cmd == 'ssecheck':  # ssecheck FILE EXPR: exit 0 when EXPR (with e = [(event, data)] of the stream) is true
    try:
        e = sse(args[0])
        sys.exit(0 if eval(args[1]) else 1)
    except SystemExit:
        raise
    except Exception as ex:
        print(f'  ({type(ex).__name__}: {ex})')
        sys.exit(1)
elif cmd == 'b64':  # b64 FILE EXPR OUT: writes the base64 string EXPR decodes to OUT
    j = load(args[0])
    with open(args[2], 'wb') as f:
        f.write(base64.b64decode(eval(args[1]), validate=True))
elif cmd == 'submit':  # submit PORT N SEED0 IDS: N small jobs with seeds SEED0.. on one connection, ids to IDS
    port, n, seed0 = int(args[0]), int(args[1]), int(args[2])
    ids = []
    for i in range(n):
        body = json.dumps({'prompt': 'a durable cube', 'width': 64, 'height': 64, 'steps': 2, 'seed': seed0 + i})
        status, data = call(port, 'POST', '/v1/jobs', body)
        if status != 202:
            print(f'submission {i}: HTTP {status}: {data[:200]}')
            break
        ids.append(json.loads(data)['id'])
    with open(args[3], 'w') as f:
        f.write('\n'.join(ids) + '\n')
    sys.exit(0 if len(ids) == n else 1)
elif cmd == 'keepalive':  # keepalive PORT N: the median milliseconds of N GET /healthz on kept-alive connections
    import http.client
    port, n = int(args[0]), int(args[1])
    conn, times = None, []
    for i in range(n):
        if conn is None:
            conn = http.client.HTTPConnection('127.0.0.1', port, timeout=10)
        t = time.perf_counter()
        conn.request('GET', '/healthz')
        r = conn.getresponse()
        r.read()
        times.append((time.perf_counter() - t) * 1000)
        if r.getheader('Connection', '').lower() == 'close':
            conn.close()
            conn = None
    times.sort()
    print(f'{times[len(times) // 2]:.1f}')
elif cmd == 'durable':  # durable PORT IDS SEED0 KILLS DATA_DIR RERUN_OUT: the state after the kills
    port, seed0, kills, data_dir = int(args[0]), int(args[2]), int(args[3]), args[4]
    ids = open(args[1]).read().split()
    status, data = call(port, 'GET', '/v1/jobs?limit=1000')
    jobs = json.loads(data)['jobs']
    problems = []
    if len(jobs) != len(ids):
        problems.append(f'{len(jobs)} jobs in the queue, {len(ids)} submitted')
    if [j['id'] for j in jobs] != ids:
        problems.append(f'the ids differ from the submitted ones (lost: {len(set(ids) - {j["id"] for j in jobs})})')
    by_status = {}
    for j in jobs:
        by_status[j['status']] = by_status.get(j['status'], 0) + 1
    if by_status != {'succeeded': len(ids)}:
        problems.append(f'statuses {by_status}')
    reruns = [j for j in jobs if j['attempts'] != 1]
    if len(reruns) > kills or any(j['attempts'] != 2 for j in reruns):
        problems.append(f'attempts: {[(j["id"], j["attempts"]) for j in reruns]} after {kills} kills')
    import os
    for i, j in enumerate(jobs):
        want = seed0 + ids.index(j['id'])
        if j['request']['seed'] != want or [im['seed'] for im in j['images']] != [want]:
            problems.append(f'job {j["id"]}: seed {j["request"]["seed"]}, images {j["images"]}, want {want}')
            break
        if not os.path.isfile(os.path.join(data_dir, 'results', j['id'], '0.png')):
            problems.append(f'job {j["id"]}: no result file')
            break
    with open(args[5], 'w') as f:
        f.write(''.join(f'{j["id"]} {j["request"]["seed"]}\n' for j in reruns))
    if problems:
        print(f'  durability: {len(jobs)} jobs, {by_status}, {len(reruns)} ran twice after {kills} kills')
    for p in problems:
        print('  ' + p)
    sys.exit(1 if problems else 0)
else:
    sys.exit(f'unknown helper command {cmd}')
EOF
h() { "$py" "$tmp/h.py" "$@"; }

# start_server NAME DATA_DIR [ARGS...]: starts `sdcpu serve` on a free loopback port; sets port and spid. Waits at
# most 20 s for /healthz; returns 1 when it did not come up.
start_server() {
  local name=$1 dir=$2 i end=$((SECONDS + 20))
  shift 2
  : >"$tmp/$name.out"
  "$sdcpu" serve --model "tiny=$model" --listen 127.0.0.1:0 --data-dir "$dir" "$@" \
    >"$tmp/$name.out" 2>"$tmp/$name.err" &
  spid=$!
  started+=("$spid")
  port=""
  for ((i = 0; i < 200 && SECONDS < end; i++)); do
    [ -n "$port" ] ||
      port=$(sed -nE 's#^sdcpu serve: listening on http://127\.0\.0\.1:([0-9]+) .*#\1#p' "$tmp/$name.out" 2>/dev/null)
    if [ -n "$port" ] && [ "$(curl -s -m 2 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/healthz")" = 200 ]; then
      return 0
    fi
    kill -0 "$spid" 2>/dev/null || break
    sleep 0.1
  done
  echo "server $name did not come up within 20 s: $(tail -3 "$tmp/$name.err")"
  return 1
}

# stop_server [SECONDS]: SIGTERM to the current server; kill -9 when it has not exited within SECONDS (default 10).
# Returns 1 when it had to be killed.
stop_server() {
  local limit=${1:-10} i end
  end=$((SECONDS + limit))
  kill -TERM "$spid" 2>/dev/null
  for ((i = 0; i < limit * 10 && SECONDS < end; i++)); do
    kill -0 "$spid" 2>/dev/null || { wait "$spid" 2>/dev/null; return 0; }
    sleep 0.1
  done
  kill -9 "$spid" 2>/dev/null
  wait "$spid" 2>/dev/null
  return 1
}

# call METHOD PATH [CURL_ARGS...]: one request to the current server; sets code, the body in $tmp/body and the
# headers in $tmp/headers.
call() {
  local method=$1 path=$2
  shift 2
  : >"$tmp/body"
  code=$(curl -sS -m 30 -o "$tmp/body" -D "$tmp/headers" -w '%{http_code}' -X "$method" "$@" \
    "http://127.0.0.1:$port$path" 2>"$tmp/curl.err")
}
post() { local path=$1 body=$2; shift 2; call POST "$path" -H 'Content-Type: application/json' --data-binary "$body" "$@"; }

# expect CODE PY_EXPR WHAT -- METHOD PATH [CURL_ARGS...]: the request answers CODE, and PY_EXPR ("" = no check) is
# true of its JSON body j.
expect() {
  local want=$1 cond=$2 what=$3
  shift 4
  call "$@"
  if [ "$code" = "$want" ] && { [ -z "$cond" ] || h check "$tmp/body" "$cond"; }; then
    ok
  else
    fail "$what: $1 $2 -> $code (want $want${cond:+ and $cond}): $(head -c 400 "$tmp/body") $(cat "$tmp/curl.err")"
  fi
}
# expect_post CODE PY_EXPR WHAT PATH BODY [CURL_ARGS...]
expect_post() {
  local want=$1 cond=$2 what=$3 path=$4 body=$5
  shift 5
  expect "$want" "$cond" "$what" -- POST "$path" -H 'Content-Type: application/json' --data-binary "$body" "$@"
}

# submit BODY [CURL_ARGS...]: POST /v1/jobs; sets id ("" when it was not accepted).
submit() {
  post /v1/jobs "$1" "${@:2}"
  id=""
  if [ "$code" = 202 ] || [ "$code" = 200 ]; then id=$(h get "$tmp/body" "j['id']"); fi
}

# wait_job ID [SECONDS] [CURL_ARGS...]: polls the job until it is finished (default at most 60 s); sets jstatus, the
# job in $tmp/job.json.
wait_job() {
  local jid=$1 limit=${2:-60} i end
  end=$((SECONDS + limit))
  jstatus=""
  for ((i = 0; i < limit * 20 && SECONDS < end; i++)); do
    call GET "/v1/jobs/$jid" "${@:3}"
    [ "$code" = 200 ] || { jstatus="HTTP $code"; return 1; }
    cp "$tmp/body" "$tmp/job.json"
    jstatus=$(h get "$tmp/job.json" "j['status']")
    case $jstatus in succeeded | failed | cancelled) return 0 ;; esac
    sleep 0.05
  done
  return 1
}

# wait_running ID [SECONDS] [CURL_ARGS...]: polls until the job is running with at least one step done.
wait_running() {
  local jid=$1 limit=${2:-20} i end
  end=$((SECONDS + limit))
  for ((i = 0; i < limit * 20 && SECONDS < end; i++)); do
    call GET "/v1/jobs/$jid" "${@:3}"
    [ "$code" = 200 ] && h check "$tmp/body" "j['status'] == 'running' and j['progress']['step'] >= 1" >/dev/null &&
      return 0
    sleep 0.05
  done
  return 1
}

# gen OUT ARGS...: the reference image from `sdcpu generate`, on one thread (the images do not depend on the thread
# count, and on a busy 2-core machine one thread is several times faster than two).
gen() {
  local out=$1
  shift
  "$sdcpu" generate --model "$model" --width 64 --height 64 --threads 1 -q -o "$out" "$@" >"$tmp/gen.log" 2>&1 ||
    echo "  (sdcpu generate $* failed: $(tail -2 "$tmp/gen.log"))"
}

# same WHAT A B: the two files are byte-identical.
same() {
  if [ -s "$2" ] && cmp -s "$2" "$3"; then ok; else fail "$1: $2 and $3 differ (or one is missing)"; fi
}

# ---- the main server ----------------------------------------------------------------------------------------

section start
start_server main "$tmp/main" || { fail "the server did not start"; finish; }
base="http://127.0.0.1:$port"
grep -q "listening on http://127.0.0.1:$port " "$tmp/main.out" && ok || fail "listening line: $(cat "$tmp/main.out")"

expect 200 "j == {'status': 'ok'}" "healthz" -- GET /healthz
expect 200 "j == {'status': 'ready', 'models': ['tiny']}" "readyz" -- GET /readyz
expect 404 "j['error']['code'] == 'not_found'" "unknown route" -- GET /v2/nothing
# Kept-alive connections answer at once (no Nagle/delayed-ACK stall of ~40 ms per request: TCP_NODELAY).
ms=$(h keepalive "$port" 20)
"$py" -c "import sys; sys.exit(0 if float('$ms') < 20 else 1)" && ok ||
  fail "keep-alive requests take a median $ms ms (want < 20; a fresh connection takes ~1 ms)"

section native
# (a) Native jobs: three queued at once, each identical to `sdcpu generate` with the same parameters.
submit '{"prompt": "a red cube", "width": 64, "height": 64, "steps": 3, "sampler": "euler_a", "seed": 7, "cfg_scale": 7.5}'
j1=$id
[ "$code" = 202 ] && h check "$tmp/body" "set(j) == {'id', 'status', 'queue_position', 'seed', 'url'} and j['seed'] == 7 \
  and j['url'] == '/v1/jobs/' + j['id'] and j['status'] in ('queued', 'running')" && ok ||
  fail "submit: $code $(cat "$tmp/body")"
grep -qi "^Location: /v1/jobs/$j1" "$tmp/headers" && ok || fail "submit: no Location header"
submit '{"prompt": "一只猫, a cat", "negative_prompt": "blurry, low quality", "width": 64, "height": 64, "steps": 4,
  "sampler": "dpmpp_2m_karras", "seed": 11, "batch_count": 2, "cfg_scale": 5}'
j2=$id
submit '{"prompt": "a green cone", "width": 64, "height": 64, "steps": 3, "sampler": "ddim", "seed": 4000000000,
  "clip_skip": 1, "timestep_spacing": "trailing", "cache_interval": 2, "cache_branch": 1}'
j3=$id
gen "$tmp/g1.png" --prompt "a red cube" --steps 3 --sampler euler_a --seed 7 --cfg-scale 7.5
gen "$tmp/g2.png" --prompt "一只猫, a cat" --negative-prompt "blurry, low quality" --steps 4 --sampler dpmpp_2m_karras \
  --seed 11 --cfg-scale 5
gen "$tmp/g2b.png" --prompt "一只猫, a cat" --negative-prompt "blurry, low quality" --steps 4 --sampler dpmpp_2m_karras \
  --seed 12 --cfg-scale 5
gen "$tmp/g3.png" --prompt "a green cone" --steps 3 --sampler ddim --seed 4000000000 --clip-skip 1 \
  --timestep-spacing trailing --cache-interval 2 --cache-branch 1
for jid in "$j1" "$j2" "$j3"; do
  wait_job "$jid" 60 && [ "$jstatus" = succeeded ] && ok || fail "job $jid: $jstatus $(head -c 400 "$tmp/job.json")"
done
call GET "/v1/jobs/$j2"
h check "$tmp/body" "j['id'] == '$j2' and j['status'] == 'succeeded' and j['model'] == 'tiny' and j['attempts'] == 1 \
  and j['request']['negative_prompt'] == 'blurry, low quality' and j['request']['batch_count'] == 2 \
  and j['request']['seed'] == 11 and j['queue_position'] is None and j['cancel_requested'] is False \
  and j['error'] is None and j['created_ms'] <= j['started_ms'] <= j['finished_ms'] \
  and {'queue_wait_s', 'run_s'} <= set(j['timings']) and j['progress']['images'] == 2 \
  and j['images'] == [{'url': '/v1/jobs/$j2/images/0.png', 'seed': 11}, {'url': '/v1/jobs/$j2/images/1.png', 'seed': 12}]" &&
  ok || fail "job JSON: $(head -c 600 "$tmp/body")"
call GET "/v1/jobs/$j1/images/0.png"; cp "$tmp/body" "$tmp/s1.png"
[ "$code" = 200 ] && grep -qi '^Content-Type: image/png' "$tmp/headers" && ok || fail "image download: $code"
same "native euler_a image vs generate" "$tmp/s1.png" "$tmp/g1.png"
call GET "/v1/jobs/$j2/images/0.png"; cp "$tmp/body" "$tmp/s2.png"
same "native dpmpp_2m_karras + negative prompt, image 0 vs generate --seed 11" "$tmp/s2.png" "$tmp/g2.png"
call GET "/v1/jobs/$j2/images/1.png"; cp "$tmp/body" "$tmp/s2b.png"
same "native batch_count 2, image 1 vs generate --seed 12" "$tmp/s2b.png" "$tmp/g2b.png"
call GET "/v1/jobs/$j3/images/0.png"; cp "$tmp/body" "$tmp/s3.png"
same "native ddim + clip_skip + trailing + step caching vs generate" "$tmp/s3.png" "$tmp/g3.png"
h pngcheck "$tmp/s3.png" "'DeepCache interval: 2, DeepCache branch: 1' in t['parameters']" &&
  ok || fail "step caching in the PNG's parameters: $(h pngcheck "$tmp/s3.png" "print(t) or 1")"
h pngcheck "$tmp/s2b.png" \
  "(w, h) == (64, 64) and 'Seed: 12,' in t['parameters'] and t['parameters'].startswith('一只猫')" &&
  ok || fail "the PNG's parameters text: $(h pngcheck "$tmp/s2b.png" "print(t) or 1")"
expect 404 "j['error']['code'] == 'not_found'" "image 2 of a 2-image job" -- GET "/v1/jobs/$j2/images/2.png"
expect 404 "" "image index 99999 of a job" -- GET "/v1/jobs/$j2/images/99999.png"

# The job list: filters, pages, bad parameters.
expect 200 "[x['id'] for x in j['jobs']] == ['$j1', '$j2'] and j['next_after'] == '$j2'" "list page 1" -- \
  GET "/v1/jobs?status=succeeded&limit=2"
expect 200 "[x['id'] for x in j['jobs']] == ['$j3']" "list page 2" -- GET "/v1/jobs?status=succeeded&limit=2&after=$j2"
expect 200 "j == {'jobs': [], 'next_after': None}" "list after the last" -- GET "/v1/jobs?after=$j3"
expect 200 "j['jobs'] == []" "list of failed jobs" -- GET "/v1/jobs?status=failed"
expect 400 "j['error']['field'] == 'status'" "list with a bad status" -- GET "/v1/jobs?status=done"
expect 400 "j['error']['field'] == 'limit'" "list with limit 0" -- GET "/v1/jobs?limit=0"
expect 400 "j['error']['field'] == 'limit'" "list with limit x" -- GET "/v1/jobs?limit=x"
expect 400 "j['error']['field'] == 'after'" "list with a bad after" -- GET "/v1/jobs?after=zzz"

# Metrics after 4 images.
call GET /metrics
if [ "$code" = 200 ] && grep -q '^sdcpu_queue_depth 0$' "$tmp/body" &&
  grep -q '^sdcpu_jobs{status="succeeded"} 3$' "$tmp/body" &&
  grep -q '^sdcpu_images_total 4$' "$tmp/body" && grep -q '^sdcpu_step_duration_seconds_count 14$' "$tmp/body" &&
  grep -q '^sdcpu_step_duration_seconds_bucket{le="+Inf"} 14$' "$tmp/body" &&
  grep -q '^sdcpu_job_duration_seconds_count 3$' "$tmp/body" && grep -q '^sdcpu_job_duration_seconds_sum ' "$tmp/body" &&
  grep -qi '^Content-Type: text/plain' "$tmp/headers"; then
  ok
else
  fail "metrics: $code $(grep -v '^#' "$tmp/body" | grep -v bucket)"
fi

section a1111
# (a) AUTOMATIC1111: txt2img identical to generate, the response field by field as modules/api/models.py's
# TextToImageResponse (images: List[str], parameters: dict, info: str), info as A1111's processing.js() JSON.
post /sdapi/v1/txt2img '{"prompt": "a red cube, café", "negative_prompt": "blurry", "steps": 3, "cfg_scale": 6,
  "width": 64, "height": 64, "seed": 21, "sampler_name": "Euler a"}'
cp "$tmp/body" "$tmp/a1.json"
[ "$code" = 200 ] && ok || fail "txt2img: $code $(head -c 300 "$tmp/a1.json")"
h check "$tmp/a1.json" "set(j) == {'images', 'parameters', 'info'} and isinstance(j['images'], list) \
  and len(j['images']) == 1 and all(isinstance(i, str) for i in j['images']) and isinstance(j['parameters'], dict) \
  and isinstance(j['info'], str)" && ok || fail "txt2img response shape: $(head -c 300 "$tmp/a1.json")"
h check "$tmp/a1.json" "(lambda i: isinstance(i, dict) and i['seed'] == 21 and i['all_seeds'] == [21] \
  and i['all_prompts'] == ['a red cube, café'] and i['prompt'] == 'a red cube, café' \
  and i['negative_prompt'] == 'blurry' and i['all_negative_prompts'] == ['blurry'] and i['sampler_name'] == 'Euler a' \
  and i['width'] == 64 and i['height'] == 64 and i['steps'] == 3 and i['cfg_scale'] == 6 and i['batch_size'] == 1 \
  and i['index_of_first_image'] == 0 and isinstance(i['job_timestamp'], str) \
  and i['infotexts'] == [b64png(s)[2]['parameters'] for s in j['images']])(json.loads(j['info']))" &&
  ok || fail "txt2img info: $(h get "$tmp/a1.json" "j['info']" | head -c 800)"
h check "$tmp/a1.json" "(lambda p: p['prompt'] == 'a red cube, café' and p['seed'] == 21 and p['steps'] == 3 \
  and p['cfg_scale'] == 6 and p['width'] == 64 and p['height'] == 64 and p['sampler_name'] == 'Euler a' \
  and p['negative_prompt'] == 'blurry' and p['batch_size'] == 1 and p['n_iter'] == 1)(j['parameters'])" &&
  ok || fail "txt2img parameters: $(h get "$tmp/a1.json" "j['parameters']")"
h b64 "$tmp/a1.json" "j['images'][0]" "$tmp/a1.png"
gen "$tmp/ga1.png" --prompt "a red cube, café" --negative-prompt blurry --steps 3 --cfg-scale 6 --seed 21 --sampler euler_a
same "txt2img Euler a image vs generate" "$tmp/a1.png" "$tmp/ga1.png"
# A1111's defaults (CFG 7), "DPM++ 2M" with scheduler Karras, batch_size 2: seeds S and S+1.
post /sdapi/v1/txt2img '{"prompt": "a red cube", "steps": 3, "width": 64, "height": 64, "seed": 30,
  "sampler_name": "DPM++ 2M", "scheduler": "Karras", "batch_size": 2}'
cp "$tmp/body" "$tmp/a2.json"
h check "$tmp/a2.json" "len(j['images']) == 2 and (lambda i: i['all_seeds'] == [30, 31] and i['seed'] == 30 \
  and i['sampler_name'] == 'DPM++ 2M Karras' and i['cfg_scale'] == 7 and len(i['infotexts']) == 2 \
  and i['infotexts'] == [b64png(s)[2]['parameters'] for s in j['images']])(json.loads(j['info']))" &&
  ok || fail "txt2img batch: $code $(head -c 600 "$tmp/a2.json")"
h b64 "$tmp/a2.json" "j['images'][1]" "$tmp/a2.png"
gen "$tmp/ga2.png" --prompt "a red cube" --steps 3 --cfg-scale 7 --seed 31 --sampler dpmpp_2m_karras
same "txt2img batch image 1 (DPM++ 2M Karras, default CFG) vs generate --seed 31" "$tmp/a2.png" "$tmp/ga2.png"
# "DPM++ 2M SDE" with scheduler Karras is sdcpu's dpmpp_2m_sde_karras, the SDE noise drawn from the same generator.
post /sdapi/v1/txt2img '{"prompt": "a red cube", "steps": 3, "width": 64, "height": 64, "seed": 40,
  "sampler_name": "DPM++ 2M SDE", "scheduler": "Karras"}'
cp "$tmp/body" "$tmp/a3.json"
h check "$tmp/a3.json" "json.loads(j['info'])['sampler_name'] == 'DPM++ 2M SDE Karras'" &&
  ok || fail "txt2img DPM++ 2M SDE with scheduler Karras: $code $(head -c 600 "$tmp/a3.json")"
h b64 "$tmp/a3.json" "j['images'][0]" "$tmp/a3.png"
gen "$tmp/ga3.png" --prompt "a red cube" --steps 3 --cfg-scale 7 --seed 40 --sampler dpmpp_2m_sde_karras
same "txt2img DPM++ 2M SDE Karras vs generate" "$tmp/a3.png" "$tmp/ga3.png"
expect_post 422 "set(j) == {'error', 'detail'} and 'DPM++ SDE Karras' in j['detail']" "txt2img unknown sampler" \
  /sdapi/v1/txt2img '{"prompt": "x", "steps": 2, "width": 64, "height": 64, "sampler_name": "DPM++ SDE Karras"}'
expect_post 422 "set(j) >= {'error', 'detail'}" "txt2img steps as a string" /sdapi/v1/txt2img '{"prompt": "x", "steps": "2"}'
expect_post 422 "set(j) >= {'error', 'detail'}" "txt2img hires fix" /sdapi/v1/txt2img \
  '{"prompt": "x", "steps": 2, "width": 64, "height": 64, "enable_hr": true}'
expect_post 422 "set(j) >= {'error', 'detail'}" "txt2img malformed JSON" /sdapi/v1/txt2img '{"prompt": '
expect_post 422 "set(j) >= {'error', 'detail'}" "txt2img width 100" /sdapi/v1/txt2img \
  '{"prompt": "x", "steps": 2, "width": 100, "height": 64}'
expect_post 422 "set(j) >= {'error', 'detail'} and 'nope' in j['detail']" "txt2img unknown sd_model_checkpoint" \
  /sdapi/v1/txt2img '{"prompt": "x", "steps": 2, "width": 64, "height": 64,
  "override_settings": {"sd_model_checkpoint": "nope"}}'
expect 200 "isinstance(j, list) and len(j) == 13 and all(set(s) == {'name', 'aliases', 'options'} \
  and isinstance(s['name'], str) and isinstance(s['aliases'], list) and isinstance(s['options'], dict) for s in j) \
  and {'Euler a', 'Euler', 'Euler Karras', 'DPM++ 2M', 'DPM++ 2M Karras', 'DPM++ 2M SDE', 'DPM++ 2M SDE Karras', \
  'LMS', 'Heun', 'DDIM', 'PLMS', 'UniPC', 'LCM'} == {s['name'] for s in j}" \
  "sdapi samplers" -- GET /sdapi/v1/samplers
expect 200 "isinstance(j, list) and len(j) == 1 and j[0]['title'] == 'tiny' and j[0]['model_name'] == 'tiny' \
  and isinstance(j[0]['filename'], str) and '$src' not in json.dumps(j)" "sdapi sd-models" -- GET /sdapi/v1/sd-models
expect 200 "isinstance(j, dict) and j['sd_model_checkpoint'] == 'tiny'" "sdapi options" -- GET /sdapi/v1/options
expect 200 "set(j) >= {'progress', 'eta_relative', 'state', 'current_image', 'textinfo'} \
  and isinstance(j['progress'], (int, float)) and isinstance(j['eta_relative'], (int, float)) \
  and isinstance(j['state'], dict) and j['progress'] == 0" "sdapi progress when idle" -- GET /sdapi/v1/progress
expect 200 "j == {}" "sdapi interrupt when idle" -- POST /sdapi/v1/interrupt -d ''
# An empty POST as HTTP clients send it (Content-Length: 0). Not checked: a POST with neither Content-Length nor
# chunked encoding (curl -XPOST without -d), which cpp-httplib 0.11 reads until its 10 s read timeout, then refuses,
# where RFC 9112 6.3 says the body is empty (README, "sdcpu serve").
expect 200 "j == {}" "sdapi interrupt with an empty body" -- POST /sdapi/v1/interrupt -H 'Content-Length: 0' -m 3

section openai
# (a) OpenAI: a random seed, so the image is checked for form: a PNG of the requested size.
expect_post 200 "set(j) == {'created', 'data'} and isinstance(j['created'], int) and abs(j['created'] - time.time()) < 600 \
  and len(j['data']) == 1 and set(j['data'][0]) == {'b64_json'} and b64png(j['data'][0]['b64_json'])[:2] == (64, 64)" \
  "openai b64_json" /v1/images/generations \
  '{"model": "tiny", "prompt": "a red cube", "n": 1, "size": "64x64", "response_format": "b64_json"}'
expect_post 200 "len(j['data']) == 2 and all(set(d) == {'url'} \
  and d['url'].startswith('http://127.0.0.1:$port/v1/jobs/') for d in j['data'])" \
  "openai url" /v1/images/generations '{"prompt": "a red cube", "n": 2, "size": "72x64"}'
cp "$tmp/body" "$tmp/o2.json"
for k in 0 1; do
  url=$(h get "$tmp/o2.json" "j['data'][$k]['url']" 2>/dev/null)
  case $url in
    http://127.0.0.1:"$port"/*)
      curl -s -m 30 -o "$tmp/o2-$k.png" "$url"
      h pngcheck "$tmp/o2-$k.png" "(w, h) == (72, 64)" && ok || fail "openai url $k: not a 72x64 PNG" ;;
    *) fail "openai url $k: $url" ;;
  esac
done
# The seed OpenAI's route drew is in the job's record: generate with it makes image 1 again.
ojob=$(h get "$tmp/o2.json" "j['data'][1]['url'].split('/')[-3]" 2>/dev/null)
call GET "/v1/jobs/$ojob"
if [ "$code" = 200 ] &&
  h check "$tmp/body" "j['images'][1]['seed'] == j['request']['seed'] + 1 and j['model'] == 'tiny'"; then
  read -r osteps ocfg osampler oseed < <(h get "$tmp/body" \
    "' '.join(str(j['request'][k]) for k in ('steps', 'cfg_scale', 'sampler')) + ' ' + str(j['images'][1]['seed'])")
  gen "$tmp/go2.png" --prompt "a red cube" --width 72 --steps "$osteps" --cfg-scale "$ocfg" --sampler "$osampler" \
    --seed "$oseed"
  same "openai url image 1 vs generate with the job's recorded seed" "$tmp/o2-1.png" "$tmp/go2.png"
else
  fail "openai job record: $code $(head -c 400 "$tmp/body")"
fi
expect_post 400 "set(j) == {'error'} and set(j['error']) == {'message', 'type', 'param', 'code'} \
  and j['error']['param'] == 'size' and j['error']['type'] == 'invalid_request_error'" \
  "openai bad size" /v1/images/generations '{"prompt": "x", "size": "big"}'
expect_post 400 "j['error']['param'] == 'n'" "openai n 11" /v1/images/generations '{"prompt": "x", "n": 11, "size": "64x64"}'
expect_post 400 "j['error']['param'] == 'style_preset'" "openai unknown parameter" /v1/images/generations \
  '{"prompt": "x", "style_preset": "y"}'
expect_post 400 "j['error']['param'] == 'model'" "openai unknown model" /v1/images/generations \
  '{"prompt": "x", "model": "dall-e-3", "size": "64x64"}'
expect_post 400 "set(j['error']) == {'message', 'type', 'param', 'code'}" "openai size out of range" \
  /v1/images/generations '{"prompt": "x", "size": "100000x64"}'

section events
# (b) Progress as Server-Sent Events.
# A job ahead (about 2 s) keeps the followed one queued until the stream is open.
submit '{"prompt": "ahead of the followed job", "width": 256, "height": 256, "steps": 50, "seed": 5}'
submit '{"prompt": "a red cube", "width": 64, "height": 64, "steps": 40, "seed": 5}'
sse_job=$id
curl -sN -m 30 -D "$tmp/sse.headers" -o "$tmp/sse.txt" "$base/v1/jobs/$sse_job/events"
grep -qi '^Content-Type: text/event-stream' "$tmp/sse.headers" && ok ||
  fail "events: content type: $(cat "$tmp/sse.headers")"
h ssecheck "$tmp/sse.txt" "len(e) >= 2 and [k for k, _ in e].count('end') == 1 and e[-1][0] == 'end' \
  and e[-1][1]['status'] == 'succeeded' and len(e[-1][1]['images']) == 1 and {k for k, _ in e} == {'progress', 'end'} \
  and any(k == 'progress' and d['status'] == 'running' and d['progress']['step'] >= 1 for k, d in e) \
  and (lambda s: s == sorted(s))([d['progress']['step'] for k, d in e if k == 'progress' and d['status'] == 'running'])" &&
  ok || fail "events: $(head -c 600 "$tmp/sse.txt")"
curl -sN -m 10 -o "$tmp/sse2.txt" "$base/v1/jobs/$j1/events"
h ssecheck "$tmp/sse2.txt" "[k for k, _ in e] == ['end'] and e[0][1]['status'] == 'succeeded'" &&
  ok || fail "events of a finished job: $(head -c 300 "$tmp/sse2.txt")"

section cancel
# (c) Cancellation: a long job (1000 steps at 256x256, about 40 s here) while running, a queued one at once;
# A1111's progress and interrupt.
long='{"prompt": "a long job", "width": 256, "height": 256, "steps": 1000, "seed": 1}'
submit "$long"
long1=$id
submit '{"prompt": "behind the long job", "width": 64, "height": 64, "steps": 2, "seed": 2}'
queued1=$id
wait_running "$long1" 20 && ok || fail "the long job did not start: $(head -c 300 "$tmp/body")"
expect 200 "j['status'] == 'queued' and j['queue_position'] == 0" "a queued job's position" -- GET "/v1/jobs/$queued1"
expect 409 "j['error']['code'] == 'not_ready'" "the image of a running job" -- GET "/v1/jobs/$long1/images/0.png"
expect 200 "j['progress'] > 0 and j['state']['job'] == '$long1' and j['state']['sampling_steps'] == 1000 \
  and j['state']['sampling_step'] >= 1 and j['state']['job_count'] == 1" "sdapi progress while running" -- \
  GET /sdapi/v1/progress
expect 200 "j['status'] == 'cancelled' and j['queue_position'] is None" "cancel a queued job: cancelled at once" -- \
  DELETE "/v1/jobs/$queued1"
t0=$(date +%s%N)
expect 200 "j['cancel_requested'] is True and j['status'] in ('running', 'cancelled')" "cancel a running job" -- \
  DELETE "/v1/jobs/$long1"
wait_job "$long1" 10
ms=$((($(date +%s%N) - t0) / 1000000))
[ "$jstatus" = cancelled ] && [ "$ms" -lt 5000 ] && h check "$tmp/job.json" "j['images'] == []" && ok ||
  fail "the running job after DELETE: $jstatus after $ms ms"
expect 409 "" "the image of a cancelled job" -- GET "/v1/jobs/$long1/images/0.png"
wait_job "$queued1" 1
[ "$jstatus" = cancelled ] && ok || fail "the cancelled queued job ran: $jstatus"
expect 200 "j['status'] == 'succeeded'" "DELETE of a finished job changes nothing" -- DELETE "/v1/jobs/$j1"
submit "$long"
long2=$id
wait_running "$long2" 20
expect 200 "j == {}" "sdapi interrupt" -- POST /sdapi/v1/interrupt -d ''
wait_job "$long2" 5
[ "$jstatus" = cancelled ] && ok || fail "interrupted job: $jstatus"

section idempotency
# (d) Idempotency-Key: the same key gives the same job; only one job is made, also when retries race.
submit '{"prompt": "an idempotent cube", "width": 64, "height": 64, "steps": 2, "seed": 3}' -H 'Idempotency-Key: order-1'
idem=$id c1=$code
submit '{"prompt": "an idempotent cube", "width": 64, "height": 64, "steps": 2, "seed": 3}' -H 'Idempotency-Key: order-1'
[ "$c1" = 202 ] && [ "$code" = 200 ] && [ -n "$idem" ] && [ "$id" = "$idem" ] && ok ||
  fail "idempotency: $c1 then $code, ids $idem $id"
pids=()
for i in 1 2 3 4 5 6; do
  curl -s -m 20 -o "$tmp/race-$i.json" -XPOST -H 'Idempotency-Key: race-1' --data-binary \
    '{"prompt": "a racing cube", "width": 64, "height": 64, "steps": 2, "seed": 4}' "$base/v1/jobs" &
  pids+=($!)
  started+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
race_ids=$(for f in "$tmp"/race-*.json; do h get "$f" "j['id']" 2>/dev/null || echo "no-id"; done | sort -u)
[ "$(wc -l <<<"$race_ids")" = 1 ] && [ "$race_ids" != no-id ] &&
  ok || fail "idempotency race: $(cat "$tmp"/race-*.json)"
submit '{"prompt": "an idempotent cube", "width": 64, "height": 64, "steps": 2, "seed": 3}' -H 'Idempotency-Key: order-2'
[ "$code" = 202 ] && [ "$id" != "$idem" ] && ok || fail "another key made no new job: $code"
wait_job "$id" 20
expect_post 400 "j['error']['field'] == 'Idempotency-Key'" "an Idempotency-Key of 300 bytes" /v1/jobs \
  '{"prompt": "an idempotent cube", "width": 64, "height": 64, "steps": 2}' -H "Idempotency-Key: $(printf 'k%.0s' {1..300})"
expect 200 "sum(x['request']['prompt'] == 'an idempotent cube' for x in j['jobs']) == 2 \
  and sum(x['request']['prompt'] == 'a racing cube' for x in j['jobs']) == 1" "one job per idempotency key" -- \
  GET "/v1/jobs?limit=1000"

section bad-input
# (f) Bad input: each refused with its own status, and the server goes on.
expect_post 400 "j['error']['code'] == 'invalid_json'" "malformed JSON" /v1/jobs '{"prompt": "x",'
expect_post 400 "'error' in j" "a JSON array body" /v1/jobs '["prompt"]'
expect_post 400 "'error' in j" "an empty body" /v1/jobs ''
expect_post 400 "j['error']['field'] == 'steps' and set(j['error']) == {'code', 'message', 'field'}" "steps \"ten\"" \
  /v1/jobs '{"prompt": "x", "steps": "ten"}'
expect_post 400 "j['error']['field'] == 'width'" "width 64.5" /v1/jobs '{"prompt": "x", "width": 64.5}'
expect_post 400 "j['error']['field'] == 'prompt'" "prompt 42" /v1/jobs '{"prompt": 42}'
expect_post 400 "j['error']['field'] == 'prompt'" "no prompt" /v1/jobs '{"steps": 2}'
expect_post 400 "j['error']['field'] == 'seed'" "seed -5" /v1/jobs '{"prompt": "x", "seed": -5}'
expect_post 400 "j['error']['code'] == 'unknown_field' and j['error']['field'] == 'colour'" "unknown field" /v1/jobs \
  '{"prompt": "x", "colour": "red"}'
# Out of range: 400 naming the field, as the error shape {"error": {"code", "message", "field"}} promises.
expect_post 400 "j['error']['field'] == 'sampler'" "unknown sampler" /v1/jobs '{"prompt": "x", "sampler": "dpmpp_sde_karras"}'
expect_post 400 "j['error']['field'] == 'model' and j['error']['code'] == 'unknown_model'" "unknown model" /v1/jobs \
  '{"prompt": "x", "model": "../../models/tiny-sd"}'
expect_post 400 "j['error']['field'] == 'width'" "width 100000" /v1/jobs '{"prompt": "x", "width": 100000}'
expect_post 400 "j['error']['field'] == 'height'" "height 100" /v1/jobs '{"prompt": "x", "height": 100}'
expect_post 400 "j['error']['field'] == 'steps'" "steps 100000" /v1/jobs '{"prompt": "x", "steps": 100000}'
expect_post 400 "j['error']['field'] == 'batch_count'" "batch_count 0" /v1/jobs '{"prompt": "x", "batch_count": 0}'
expect_post 400 "j['error']['field'] == 'cfg_scale'" "cfg_scale 1000" /v1/jobs '{"prompt": "x", "cfg_scale": 1000}'
printf '{"prompt": "bad \xff\xfe bytes"}' >"$tmp/bad-utf8.json"
expect 400 "'error' in j" "invalid UTF-8 in the prompt" -- POST /v1/jobs --data-binary "@$tmp/bad-utf8.json"
printf '{"prompt": "bad \\udcff surrogate"}' >"$tmp/bad-surrogate.json"
expect 400 "'error' in j" "a lone surrogate in the prompt" -- POST /v1/jobs --data-binary "@$tmp/bad-surrogate.json"
head -c $((10 * 1024 * 1024)) /dev/zero | tr '\0' ' ' >"$tmp/big.json"
expect 413 "" "a 10 MiB body" -- POST /v1/jobs -H 'Content-Type: application/json' --data-binary "@$tmp/big.json"
{ printf '{"prompt": "'; head -c $((1024 * 1024 + 10)) /dev/zero | tr '\0' a; printf '"}'; } >"$tmp/big2.json"
expect 413 "" "a body just over 1 MiB" -- POST /v1/jobs --data-binary "@$tmp/big2.json"
expect 413 "" "a 10 MiB body to txt2img" -- POST /sdapi/v1/txt2img --data-binary "@$tmp/big.json"
expect 400 "j['error']['code'] == 'invalid_job_id'" "job id zzz" -- GET /v1/jobs/zzz
expect 400 "j['error']['code'] == 'invalid_job_id'" "job id of 33 hex digits" -- \
  GET /v1/jobs/0123456789abcdef0123456789abcdef0
expect 400 "j['error']['code'] == 'invalid_job_id'" "job id in upper case" -- GET /v1/jobs/0123456789ABCDEF0123456789ABCDEF
expect 404 "j['error']['code'] == 'not_found'" "an unknown job id" -- GET /v1/jobs/0123456789abcdef0123456789abcdef
expect 404 "" "DELETE of an unknown job id" -- DELETE /v1/jobs/0123456789abcdef0123456789abcdef
expect 404 "" "image of an unknown job id" -- GET /v1/jobs/0123456789abcdef0123456789abcdef/images/0.png
expect 404 "" "events of an unknown job id" -- GET /v1/jobs/0123456789abcdef0123456789abcdef/events
expect 400 "" "image of job id zzz" -- GET /v1/jobs/zzz/images/0.png
# "../../etc/passwd", percent-encoded: must never reach a file, and is a malformed id (400) as the README says.
call GET /v1/jobs/..%2F..%2Fetc%2Fpasswd
[ "$code" != 200 ] && [ "$code" != 500 ] && ! grep -q 'root:' "$tmp/body" && ok || fail "path traversal id: $code"
expect 400 "'error' in j" "job id ../../etc/passwd (percent-encoded)" -- \
  GET /v1/jobs/..%2F..%2Fetc%2Fpasswd
expect 400 "'error' in j" "image of job id ../../etc/passwd (percent-encoded)" -- \
  GET /v1/jobs/..%2F..%2Fetc%2Fpasswd/images/0.png
expect 200 "j == {'status': 'ok'}" "healthz after bad input" -- GET /healthz
submit '{"prompt": "after the bad input", "width": 64, "height": 64, "steps": 2, "seed": 9}'
wait_job "$id" 20 && [ "$jstatus" = succeeded ] && ok || fail "a job after bad input: $jstatus"
expect 200 "j['jobs'] == []" "no failed jobs" -- GET "/v1/jobs?status=failed"

section openai-client
# (g) The official OpenAI client (npm package openai@4), installed once into the build folder.
npm_dir=${build:+$build/npm-openai}
npm_dir=${npm_dir:-$tmp/npm-openai}
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  fail "the OpenAI client check could not run: no node or npm on PATH"
else
  if [ ! -f "$npm_dir/node_modules/openai/package.json" ]; then
    mkdir -p "$npm_dir"
    timeout 180 npm install --no-audit --no-fund --fetch-retries=1 --fetch-timeout=60000 --prefix "$npm_dir" \
      openai@4 >"$tmp/npm.log" 2>&1
  fi
  if [ ! -f "$npm_dir/node_modules/openai/package.json" ]; then
    fail "the OpenAI client check could not run: 'npm install openai@4' into $npm_dir failed" \
      "(no npm registry?): $(tail -3 "$tmp/npm.log")"
  else
    out=$(timeout 120 node "$src/tests/service/openai_client.mjs" "$port" "$npm_dir" 2>&1)
    rc=$?
    if [ "$rc" -eq 0 ] && [ "$(grep -c '^OK ' <<<"$out")" -eq 4 ]; then ok; else fail "OpenAI client (exit $rc): $out"; fi
  fi
fi

stop_server 10 && ok || fail "SIGTERM did not stop the idle server within 10 s"
grep -q "sdcpu serve: stopped" "$tmp/main.err" && ok || fail "no 'stopped' line: $(tail -3 "$tmp/main.err")"

section batching
# ---- (d2) batching across requests: --max-batch 4 -----------------------------------------------------------------
# Jobs queued behind a long one, with the same size, steps, sampler and guidance, run together as one UNet batch:
# they are all running at the same time (one worker runs one batch at a time), each image is still the one
# `sdcpu generate` makes, and a job cancelled mid-batch leaves the others to finish.
start_server batch "$tmp/batch" --max-batch 4 || { fail "the batching server did not start"; finish; }
submit '{"prompt": "a long job", "width": 256, "height": 256, "steps": 1000, "seed": 1}'
blocker=$id
wait_running "$blocker" 20 && ok || fail "batching: the long job did not start"
bjobs=()
for k in 0 1 2 3; do
  submit "{\"prompt\": \"batched $k\", \"negative_prompt\": \"blur $k\", \"width\": 128, \"height\": 128, \"steps\": 40,
    \"sampler\": \"euler_a\", \"seed\": $((50 + k)), \"cfg_scale\": 6}"
  bjobs+=("$id")
done
submit '{"prompt": "other settings", "width": 64, "height": 64, "steps": 5, "sampler": "euler_a", "seed": 60}'
other=$id
expect 200 "j['cancel_requested'] is True" "batching: cancel the long job" -- DELETE "/v1/jobs/$blocker"
wait_running "${bjobs[1]}" 20
expect 200 "j['cancel_requested'] is True" "batching: cancel a job inside a running batch" -- DELETE "/v1/jobs/${bjobs[1]}"
for jid in "${bjobs[@]}" "$other"; do wait_job "$jid" 60; done
for k in 0 2 3; do
  call GET "/v1/jobs/${bjobs[$k]}"
  h check "$tmp/body" "j['status'] == 'succeeded' and j['attempts'] == 1" && ok ||
    fail "batched job $k: $(head -c 300 "$tmp/body")"
  cp "$tmp/body" "$tmp/b$k.json"
  call GET "/v1/jobs/${bjobs[$k]}/images/0.png"; cp "$tmp/body" "$tmp/b$k.png"
  gen "$tmp/gb$k.png" --prompt "batched $k" --negative-prompt "blur $k" --width 128 --height 128 --steps 40 \
    --sampler euler_a --seed $((50 + k)) --cfg-scale 6
  same "batched job $k vs generate --seed $((50 + k))" "$tmp/b$k.png" "$tmp/gb$k.png"
done
call GET "/v1/jobs/${bjobs[1]}"
h check "$tmp/body" "j['status'] == 'cancelled' and j['images'] == []" && ok ||
  fail "the job cancelled inside its batch: $(head -c 300 "$tmp/body")"
# Ran together: every one started before any finished (the worker runs one batch at a time).
"$py" - "$tmp/b0.json" "$tmp/b2.json" "$tmp/b3.json" <<'PYEOF' && ok || fail "batching: the jobs did not run together"
import json, sys
jobs = [json.load(open(f)) for f in sys.argv[1:]]
print(f"  batched jobs: started {[j['started_ms'] for j in jobs]}, finished {[j['finished_ms'] for j in jobs]}")
sys.exit(0 if max(j['started_ms'] for j in jobs) < min(j['finished_ms'] for j in jobs) else 1)
PYEOF
call GET "/v1/jobs/$other"
h check "$tmp/body" "j['status'] == 'succeeded'" && ok || fail "the job with other settings: $(head -c 300 "$tmp/body")"
call GET "/v1/jobs/$other/images/0.png"; cp "$tmp/body" "$tmp/bo.png"
gen "$tmp/gbo.png" --prompt "other settings" --steps 5 --sampler euler_a --seed 60
same "the job with other settings after a batch vs generate" "$tmp/bo.png" "$tmp/gbo.png"
stop_server 10 && ok || fail "SIGTERM did not stop the batching server"

section durability
# ---- (e) durability: kill -9 while jobs are queued and one is running, three times ----------------------------

dur="$tmp/durable"
n=200 seed0=1000 kills=0
start_server durable "$dur" || { fail "the durability server did not start"; finish; }
t_dur=$SECONDS
h submit "$port" "$n" "$seed0" "$tmp/ids" && ok || fail "submitting $n jobs"
first=$(head -1 "$tmp/ids")
wait_job "$first" 20
curl -s -m 10 -o "$tmp/first-before.png" "http://127.0.0.1:$port/v1/jobs/$first/images/0.png"
# counts: "queued running succeeded failed cancelled" of the current server, from /metrics.
counts() {
  curl -s -m 5 "http://127.0.0.1:$port/metrics" | awk -F'[" ]' '/^sdcpu_jobs[{]/ { v[$2] = $NF }
    END { print v["queued"] + 0, v["running"] + 0, v["succeeded"] + 0, v["failed"] + 0, v["cancelled"] + 0 }'
}
# kill_busy: kill -9 the server once it has queued jobs and one running (polled for at most 10 s).
kill_busy() {
  local i c end=$((SECONDS + 10))
  for ((i = 0; i < 500 && SECONDS < end; i++)); do
    read -r -a c <<<"$(counts)"
    if [ "${c[0]:-0}" -gt 0 ] && [ "${c[1]:-0}" -eq 1 ]; then
      kill -9 "$spid"
      wait "$spid" 2>/dev/null
      kills=$((kills + 1))
      echo "  (kill $kills: ${c[0]} queued, ${c[2]} succeeded)" >>"$tmp/kills.log"
      return 0
    fi
    sleep 0.02
  done
  return 1
}
# wait_succeeded N: until N jobs succeeded (at most 30 s).
wait_succeeded() {
  local i c end=$((SECONDS + 30))
  for ((i = 0; i < 600 && SECONDS < end; i++)); do
    read -r -a c <<<"$(counts)"
    [ "${c[2]:-0}" -ge "$1" ] && return 0
    sleep 0.05
  done
  return 1
}
for target in 0 70 140; do
  [ "$target" -gt 0 ] && { wait_succeeded "$target" || fail "durability: $target jobs never succeeded"; }
  kill_busy && ok || fail "durability: found no moment with queued jobs and one running (target $target)"
  start_server "durable-$kills" "$dur" || { fail "durability: no restart after kill $kills"; finish; }
  curl -s -m 10 -o "$tmp/first-after.png" "http://127.0.0.1:$port/v1/jobs/$first/images/0.png"
  same "a result from before kill $kills, served after the restart" "$tmp/first-before.png" "$tmp/first-after.png"
done
wait_succeeded "$n" || fail "durability: not all $n jobs succeeded within 30 s: $(counts)"
read -r -a c <<<"$(counts)"
[ "${c[*]}" = "0 0 $n 0 0" ] && ok || fail "durability: counts queued/running/succeeded/failed/cancelled: ${c[*]}"
h durable "$port" "$tmp/ids" "$seed0" "$kills" "$dur" "$tmp/reruns" && ok ||
  { fail "durability: see above"; cat "$tmp/kills.log"; }
# A job that ran twice gives the same image as generate with its seed.
if [ -s "$tmp/reruns" ]; then
  read -r rid rseed <"$tmp/reruns"
  curl -s -m 10 -o "$tmp/rerun.png" "http://127.0.0.1:$port/v1/jobs/$rid/images/0.png"
  gen "$tmp/grerun.png" --prompt "a durable cube" --steps 2 --seed "$rseed"
  same "a job that ran again after kill -9 vs generate --seed $rseed" "$tmp/rerun.png" "$tmp/grerun.png"
fi
gen "$tmp/gfirst.png" --prompt "a durable cube" --steps 2 --seed "$seed0"
same "the first durable job vs generate" "$tmp/first-before.png" "$tmp/gfirst.png"
[ $((SECONDS - t_dur)) -le 60 ] || echo "note: the durability part took $((SECONDS - t_dur)) s (usually under 30 s)"
stop_server 10 || fail "SIGTERM did not stop the durability server within 10 s"

section keys
# ---- (f) API keys and queue limits ---------------------------------------------------------------------------

printf '# keys\nkey-a\n  key-b  \n\n' >"$tmp/keys.txt"
start_server keys "$tmp/keys" --api-key-file "$tmp/keys.txt" --max-queue 3 --max-queued-per-key 2 ||
  { fail "the server with API keys did not start"; finish; }
A=(-H 'Authorization: Bearer key-a') B=(-H 'Authorization: Bearer key-b')
expect 200 "j == {'status': 'ok'}" "healthz without a key" -- GET /healthz
expect 401 "j['error']['code'] == 'unauthorized'" "readyz without a key" -- GET /readyz
grep -qi '^WWW-Authenticate: Bearer' "$tmp/headers" && ok || fail "401 without WWW-Authenticate"
expect 401 "" "metrics without a key" -- GET /metrics
expect 401 "" "submit without a key" -- POST /v1/jobs --data-binary '{"prompt": "x"}'
expect 401 "" "submit with a wrong key" -- POST /v1/jobs --data-binary '{"prompt": "x"}' -H 'Authorization: Bearer key-c'
expect 401 "" "submit with a key prefix" -- POST /v1/jobs --data-binary '{"prompt": "x"}' -H 'Authorization: Bearer key-'
expect 401 "" "a Basic header" -- POST /v1/jobs --data-binary '{"prompt": "x"}' -H 'Authorization: Basic a2V5LWE6'
expect 401 "" "list without a key" -- GET /v1/jobs
expect 401 "set(j) >= {'error', 'detail'}" "txt2img without a key" -- POST /sdapi/v1/txt2img --data-binary '{"prompt": "x"}'
expect 401 "" "samplers without a key" -- GET /sdapi/v1/samplers
expect 401 "j['error']['type'] == 'authentication_error'" "openai without a key" -- POST /v1/images/generations \
  --data-binary '{"prompt": "x"}'
expect 200 "j['status'] == 'ready'" "readyz with key B (surrounding spaces trimmed)" -- GET /readyz "${B[@]}"
submit '{"prompt": "a slow job", "width": 256, "height": 256, "steps": 1000, "seed": 1}' "${A[@]}"
slow=$id
[ "$code" = 202 ] && ok || fail "submit with key A: $code $(cat "$tmp/body")"
expect 200 "j['id'] == '$slow'" "key A sees its job" -- GET "/v1/jobs/$slow" "${A[@]}"
expect 404 "" "key B does not see key A's job" -- GET "/v1/jobs/$slow" "${B[@]}"
expect 404 "" "key B cannot cancel key A's job" -- DELETE "/v1/jobs/$slow" "${B[@]}"
expect 404 "" "key B cannot follow key A's job" -- GET "/v1/jobs/$slow/events" "${B[@]}"
expect 404 "" "key B cannot fetch key A's images" -- GET "/v1/jobs/$slow/images/0.png" "${B[@]}"
expect 200 "j['jobs'] == []" "key B's list lacks key A's job" -- GET /v1/jobs "${B[@]}"
expect 401 "" "a job without a key" -- GET "/v1/jobs/$slow"
wait_running "$slow" 20 -H 'Authorization: Bearer key-a' || fail "the slow job did not start"
# Queue limits while the slow job runs: key A may queue 2 (then 429 too_many_jobs), the queue 3 (then queue_full).
small='{"prompt": "queued", "width": 64, "height": 64, "steps": 2, "seed": 1}'
accepted=0 refused=""
for i in 1 2 3 4 5 6 7 8; do
  submit "$small" "${A[@]}"
  if [ "$code" = 202 ]; then accepted=$((accepted + 1)); else refused=$code; break; fi
done
retry=$(sed -nE 's/^Retry-After: *([0-9]+).*/\1/Ip' "$tmp/headers" | tr -d '\r')
[ "$accepted" = 2 ] && [ "$refused" = 429 ] && [ -n "$retry" ] && [ "$retry" -ge 1 ] &&
  h check "$tmp/body" "j['error']['code'] == 'too_many_jobs'" && ok ||
  fail "per-key limit: $accepted accepted, then $refused, Retry-After '$retry': $(cat "$tmp/body")"
submit "$small" "${B[@]}"
[ "$code" = 202 ] && ok || fail "key B's first job with the queue at 2 of 3: $code"
submit "$small" "${B[@]}"
retry=$(sed -nE 's/^Retry-After: *([0-9]+).*/\1/Ip' "$tmp/headers" | tr -d '\r')
[ "$code" = 429 ] && [ -n "$retry" ] && h check "$tmp/body" "j['error']['code'] == 'queue_full'" && ok ||
  fail "queue full: $code, Retry-After '$retry': $(cat "$tmp/body")"
expect 429 "set(j['error']) == {'message', 'type', 'param', 'code'}" "openai route when the queue is full" -- \
  POST /v1/images/generations --data-binary '{"prompt": "x", "size": "64x64"}' "${B[@]}"
expect 429 "set(j) >= {'error', 'detail'}" "txt2img when the queue is full" -- \
  POST /sdapi/v1/txt2img --data-binary '{"prompt": "x", "width": 64, "height": 64, "steps": 2}' "${B[@]}"
# Empty the queue (B's interrupt does not touch A's job), then stop.
expect 200 "" "key B's interrupt" -- POST /sdapi/v1/interrupt -d '' "${B[@]}"
expect 200 "j['status'] == 'running' and not j['cancel_requested']" "B's interrupt left A's job running" -- \
  GET "/v1/jobs/$slow" "${A[@]}"
for key in key-a key-b; do
  for jid in $(curl -s -H "Authorization: Bearer $key" "http://127.0.0.1:$port/v1/jobs?limit=100" |
    "$py" -c 'import json, sys; print(" ".join(j["id"] for j in json.load(sys.stdin)["jobs"]))'); do
    curl -s -o /dev/null -XDELETE -H "Authorization: Bearer $key" "http://127.0.0.1:$port/v1/jobs/$jid"
  done
done
wait_job "$slow" 10 -H 'Authorization: Bearer key-a'
[ "$jstatus" = cancelled ] && ok || fail "the slow job after DELETE: $jstatus"
stop_server 10 || fail "SIGTERM did not stop the server with keys within 10 s"

section sigterm
# ---- SIGTERM while clients wait: the server stops (waiting requests end) ---------------------------------------

start_server term "$tmp/term" || { fail "the server for the SIGTERM check did not start"; finish; }
submit '{"prompt": "running at SIGTERM", "width": 256, "height": 256, "steps": 60, "seed": 1}'
running=$id
wait_running "$running" 20
submit '{"prompt": "queued at SIGTERM", "width": 64, "height": 64, "steps": 2, "seed": 2}'
queued=$id
curl -s -m 60 -o "$tmp/term-a1111.json" -XPOST --data-binary '{"prompt": "x", "width": 64, "height": 64, "steps": 2}' \
  "http://127.0.0.1:$port/sdapi/v1/txt2img" &
c1=$!
curl -sN -m 60 -o "$tmp/term-sse.txt" "http://127.0.0.1:$port/v1/jobs/$queued/events" &
c2=$!
started+=("$c1" "$c2")
sleep 0.5
kill -TERM "$spid"
t0=$SECONDS
for ((i = 0; i < 200 && SECONDS < t0 + 20; i++)); do
  kill -0 "$spid" 2>/dev/null || break
  sleep 0.1
done
if kill -0 "$spid" 2>/dev/null; then
  waiting=""
  kill -0 "$c1" 2>/dev/null && waiting+=" a txt2img request"
  kill -0 "$c2" 2>/dev/null && waiting+=" an events stream"
  fail "SIGTERM did not stop the server within 20 s while a 60-step job ran and clients waited on queued jobs" \
    "(killed with -9; clients still connected:${waiting:- none})"
  kill -9 "$spid" 2>/dev/null
else
  ok
fi
wait "$spid" 2>/dev/null
kill -9 "$c1" "$c2" 2>/dev/null
wait "$c1" "$c2" 2>/dev/null
# The jobs are still there after the stop, queued: the next start runs them.
start_server term2 "$tmp/term" || { fail "no restart after SIGTERM"; finish; }
call DELETE "/v1/jobs/$running"  # if it was cut off and runs again
wait_job "$queued" 20 && [ "$jstatus" = succeeded ] && ok || fail "a job queued at SIGTERM after the restart: $jstatus"
stop_server 10 || fail "SIGTERM did not stop the restarted server within 10 s"

finish
