#!/usr/bin/env bash
# Load benchmark of `sdcpu serve` against `sdcpu bench` on the same model and request.
#
#   bench/serve_load.sh BUILD_DIR MODEL [extra sdcpu serve args...]
#
# Starts BUILD_DIR/sdcpu serve on a free loopback port with a temporary --data-dir, then runs
# BUILD_DIR/bench_service_load:
#   (a) throughput: one warm-up job (not counted), then JOBS jobs with 1 client and JOBS jobs with CLIENTS clients;
#   (b) submit-only: SUBMIT_JOBS submissions while one long job (BUSY_STEPS steps) keeps the worker busy, with the
#       server's memory growth; every job it queued is cancelled after. Twice: a connection per request (as curl),
#       then keep-alive connections (as SDK clients' pools); throughput uses a connection per request;
# stops the server (always), then runs `BUILD_DIR/sdcpu bench` with the same size, steps, sampler and CFG, batch
# size 1 and --runs JOBS (as many timed images as each service run), and prints the service's images/min against
# bench's. Extra arguments go to both `sdcpu serve` and `sdcpu bench` where both take them (--precision,
# --weight-cache, --low-memory, --threads, --pin); the rest to serve only.
#
# Environment (defaults suit models/tiny-sd):
#   WIDTH=64 HEIGHT=64 STEPS=20 SAMPLER=dpmpp_2m CFG=7.5 JOBS=40 CLIENTS=4 SUBMIT_JOBS=1000 SUBMIT_CLIENTS=4
#   BUSY_STEPS=1000 BUSY_WIDTH=BUSY_HEIGHT=max(256, WIDTH/HEIGHT)  the long job of (b); it must outlast the
#                  submissions (bench_service_load warns when it did not)
#   OUT=DIR        where the JSON reports go (default: a temporary folder, printed)
#   RUN_TIMEOUT_S=1800  bound of each bench_service_load run; START_TIMEOUT_S=600 bound of the server's start
#   SKIP_BENCH=1   skip `sdcpu bench` (no ratio); BENCH_BEFORE=1 also runs it before the server (the ratio is then
#                  against the mean of both: on a shared machine the two bracket the service runs)
set -euo pipefail

if [[ $# -lt 2 ]]; then
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
  exit 2
fi
BUILD=$1
MODEL=$2
shift 2
EXTRA=("$@")

WIDTH=${WIDTH:-64}
HEIGHT=${HEIGHT:-64}
STEPS=${STEPS:-20}
SAMPLER=${SAMPLER:-dpmpp_2m}
CFG=${CFG:-7.5}
JOBS=${JOBS:-40}
CLIENTS=${CLIENTS:-4}
SUBMIT_JOBS=${SUBMIT_JOBS:-1000}
SUBMIT_CLIENTS=${SUBMIT_CLIENTS:-4}
BUSY_STEPS=${BUSY_STEPS:-1000}
BUSY_WIDTH=${BUSY_WIDTH:-$((WIDTH > 256 ? WIDTH : 256))}
BUSY_HEIGHT=${BUSY_HEIGHT:-$((HEIGHT > 256 ? HEIGHT : 256))}
RUN_TIMEOUT_S=${RUN_TIMEOUT_S:-1800}
START_TIMEOUT_S=${START_TIMEOUT_S:-600}

SDCPU=$BUILD/sdcpu
LOAD=$BUILD/bench_service_load
for exe in "$SDCPU" "$LOAD"; do
  [[ -x $exe ]] || { echo "serve_load.sh: $exe is missing; build the sdcpu and bench_service_load targets" >&2; exit 1; }
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/sdcpu-serve-load.XXXXXX")
OUT=${OUT:-$WORK/reports}
mkdir -p "$OUT"
source "$(dirname "$0")/serve_common.sh"

cleanup() {
  stop_server
  rm -rf "$WORK/data"
  [[ $OUT == "$WORK"/* ]] || rm -rf "$WORK"  # a given OUT keeps everything worth keeping
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Options both commands take go to bench as well (each with its value when it has one).
BENCH_EXTRA=()
for ((i = 0; i < ${#EXTRA[@]}; ++i)); do
  case ${EXTRA[i]} in
    --precision | --weight-cache | --threads) BENCH_EXTRA+=("${EXTRA[i]}" "${EXTRA[i + 1]:-}"); ((++i)) ;;
    --precision=* | --weight-cache=* | --threads=* | --low-memory | --pin) BENCH_EXTRA+=("${EXTRA[i]}") ;;
  esac
done

echo "serve_load: model $MODEL, ${WIDTH}x${HEIGHT}, $STEPS steps, $SAMPLER, cfg $CFG; $JOBS jobs at 1 and $CLIENTS clients;" \
  "submit-only $SUBMIT_JOBS jobs; extra: ${EXTRA[*]:-(none)}"
echo "serve_load: reports in $OUT; started $(date -u +%Y-%m-%dT%H:%M:%SZ)"

# sdcpu bench on the same request: batch size 1, as many timed runs as each service run has jobs.
run_bench() {  # NAME
  echo "serve_load: sdcpu bench --runs $JOBS ($1, started $(date -u +%H:%M:%SZ))"
  "$SDCPU" bench --model "$MODEL" --width "$WIDTH" --height "$HEIGHT" --steps "$STEPS" --sampler "$SAMPLER" \
    --cfg-scale "$CFG" --batch-sizes 1 --runs "$JOBS" "${BENCH_EXTRA[@]}" --quiet --json "$OUT/$1.json" \
    >"$OUT/$1.txt" || { echo "serve_load: sdcpu bench failed" >&2; cat "$OUT/$1.txt" >&2; STATUS=1; }
}
STATUS=0
[[ -n ${SKIP_BENCH:-} || -z ${BENCH_BEFORE:-} ]] || run_bench bench-before

# --- the server -------------------------------------------------------------------------------------------------
start_server "$OUT/serve" --model "m=$MODEL" --data-dir "$WORK/data" "${EXTRA[@]}"
echo "serve_load: server pid $SERVER_PID at $URL"

BODY=$(printf '{"prompt": "a lighthouse at dusk", "width": %d, "height": %d, "steps": %d, "sampler": "%s", "cfg_scale": %s, "seed": 42}' \
  "$WIDTH" "$HEIGHT" "$STEPS" "$SAMPLER" "$CFG")
BUSY_BODY=$(printf '{"prompt": "keep the worker busy", "width": %d, "height": %d, "steps": %d, "sampler": "%s", "cfg_scale": %s, "seed": 1}' \
  "$BUSY_WIDTH" "$BUSY_HEIGHT" "$BUSY_STEPS" "$SAMPLER" "$CFG")
COMMON=(--url "$URL" --server-pid "$SERVER_PID" --body "$BODY" --timeout-s "$RUN_TIMEOUT_S")

# (a) throughput, 1 client (after one warm-up job: the server's first job creates its kernels' primitives) and N.
"$LOAD" "${COMMON[@]}" --clients 1 --jobs "$JOBS" --warmup 1 --label "1 client" --json "$OUT/throughput-1.json" || STATUS=1
"$LOAD" "${COMMON[@]}" --clients "$CLIENTS" --jobs "$JOBS" --label "$CLIENTS clients" \
  --json "$OUT/throughput-$CLIENTS.json" || STATUS=1
# (b) submit latency and memory while one long job runs: fresh connections, then keep-alive ones.
"$LOAD" "${COMMON[@]}" --clients "$SUBMIT_CLIENTS" --submit-only "$SUBMIT_JOBS" --busy-body "$BUSY_BODY" \
  --label "while busy" --json "$OUT/submit-only.json" || STATUS=1
"$LOAD" "${COMMON[@]}" --clients "$SUBMIT_CLIENTS" --submit-only "$SUBMIT_JOBS" --busy-body "$BUSY_BODY" \
  --keep-alive 1 --label "while busy, keep-alive" --json "$OUT/submit-only-keepalive.json" || STATUS=1
echo "serve_load: server VmHWM $(awk '/^VmHWM/ {printf "%.1f MB", $2 / 1024}' "/proc/$SERVER_PID/status")"

cleanup

# --- sdcpu bench on the same request ----------------------------------------------------------------------------
[[ -n ${SKIP_BENCH:-} ]] || run_bench bench

# --- summary ----------------------------------------------------------------------------------------------------
/usr/bin/python3 - "$OUT" "$CLIENTS" <<'EOF'
import json, os, sys
out, clients = sys.argv[1], sys.argv[2]
def load(name):
    p = os.path.join(out, name)
    return json.load(open(p)) if os.path.exists(p) else None
benches = [b for b in (load("bench-before.json"), load("bench.json")) if b]
ref = sum(b["images_per_min"]["1"] for b in benches) / len(benches) if benches else None
print("\nserve_load summary")
for bench, when in zip(benches, ["before the server", "after the server"] if len(benches) == 2 else ["after the server"]):
    print(f"  sdcpu bench ({when}): {bench['images_per_min']['1']:.3f} images/min (batch 1, median of {bench['runs']} warm"
          f" runs; per image {bench['total_s']:.3f} s, first image {bench['first_image_s']:.3f} s, precision"
          f" {bench['precision']}, peak RSS {bench['peak_rss_mb']:.0f} MB)")
if len(benches) == 2:
    print(f"  sdcpu bench mean: {ref:.3f} images/min (the reference below)")
for name in ("throughput-1.json", f"throughput-{clients}.json"):
    r = load(name)
    if not r: continue
    ratio = f", {r['images_per_min'] / ref:.3f} of sdcpu bench ({100 * (r['images_per_min'] / ref - 1):+.1f}%)" if ref else ""
    lat, qw, run, sub = r["job_latency_s"], r["queue_wait_s"], r["run_s"], r["submit_ms"]
    print(f"  service, {r['clients']} client(s): {r['images_per_min']:.3f} images/min{ratio}; {r['images']} images in"
          f" {r['wall_s']:.2f} s, {r['failures']} failures")
    print(f"    latency p50 {lat['p50']:.3f} s p95 {lat['p95']:.3f} s; queue wait p50 {qw['p50']:.3f} s p95 {qw['p95']:.3f} s;"
          f" run p50 {run['p50']:.3f} s; submit p50 {sub['p50']:.2f} ms p95 {sub['p95']:.2f} ms max {sub['max']:.2f} ms")
for name in ("submit-only.json", "submit-only-keepalive.json"):
    s = load(name)
    if not s: continue
    sub = s["submit_ms"]
    conn = "keep-alive" if s["keep_alive"] else "a connection per request"
    print(f"  submit-only ({conn}): {s['accepted']} of {s['jobs']} accepted in {s['wall_s']:.2f} s with the worker busy"
          f" (busy job after: {s['busy_job_status_after_submits']}); submit p50 {sub['p50']:.2f} ms p95 {sub['p95']:.2f} ms"
          f" max {sub['max']:.2f} ms")
    if s["rss_growth_mb"] is not None:
        print(f"    server VmRSS {s['server_memory_before']['vm_rss_mb']:.1f} -> {s['server_memory_after']['vm_rss_mb']:.1f} MB:"
              f" {s['rss_growth_mb_per_1000_jobs']:+.2f} MB per 1000 queued jobs (RssAnon {s['rss_anon_growth_mb_per_1000_jobs']:+.2f})")
EOF
echo "serve_load: finished $(date -u +%Y-%m-%dT%H:%M:%SZ)"
exit $STATUS
