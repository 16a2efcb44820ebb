#!/usr/bin/env bash
# The gain from batching across requests (sdcpu serve --max-batch), measured through the service.
#
#   bench/serve_batching.sh BUILD_DIR MODEL [extra sdcpu serve args...]
#
# For each --max-batch in MAX_BATCHES, ROUNDS times in alternation (so that a slow spell of a shared machine hits
# every setting alike): starts BUILD_DIR/sdcpu serve with it, runs BUILD_DIR/bench_service_load with CLIENTS
# concurrent clients submitting JOBS jobs with the same settings (one warm-up job first, not counted), stops the
# server. Prints images/min and job latency p50/p95 per run and the median images/min per setting.
#
# Environment: WIDTH=256 HEIGHT=256 STEPS=20 SAMPLER=dpmpp_2m CFG=7.5 CLIENTS=4 JOBS=12 MAX_BATCHES="1 2 4"
#   ROUNDS=2 OUT=DIR (the JSON reports; default a temporary folder, printed)
set -euo pipefail
if [[ $# -lt 2 ]]; then
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
  exit 2
fi
BUILD=$1
MODEL=$2
shift 2
EXTRA=("$@")
WIDTH=${WIDTH:-256} HEIGHT=${HEIGHT:-256} STEPS=${STEPS:-20} SAMPLER=${SAMPLER:-dpmpp_2m} CFG=${CFG:-7.5}
CLIENTS=${CLIENTS:-4} JOBS=${JOBS:-12} MAX_BATCHES=${MAX_BATCHES:-"1 2 4"} ROUNDS=${ROUNDS:-2}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/sdcpu-serve-batching.XXXXXX")
OUT=${OUT:-$WORK/reports}
mkdir -p "$OUT"
SDCPU=$BUILD/sdcpu
source "$(dirname "$0")/serve_common.sh"
trap 'stop_server; rm -rf "$WORK/data"' EXIT
trap 'exit 130' INT TERM

BODY=$(printf '{"prompt": "a lighthouse at dusk", "width": %d, "height": %d, "steps": %d, "sampler": "%s", "cfg_scale": %s, "seed": 42}' \
  "$WIDTH" "$HEIGHT" "$STEPS" "$SAMPLER" "$CFG")
echo "serve_batching: $MODEL ${WIDTH}x${HEIGHT}, $STEPS steps, $SAMPLER, cfg $CFG; $CLIENTS clients x $JOBS jobs;" \
  "max batch $MAX_BATCHES, $ROUNDS rounds; extra: ${EXTRA[*]:-(none)}; reports in $OUT"
for ((round = 1; round <= ROUNDS; ++round)); do
  for mb in $MAX_BATCHES; do
    start_server "$WORK/serve" --model "m=$MODEL" --data-dir "$WORK/data" --max-batch "$mb" "${EXTRA[@]}"
    "$BUILD/bench_service_load" --url "$URL" --server-pid "$SERVER_PID" --body "$BODY" --clients "$CLIENTS" \
      --jobs "$JOBS" --warmup 1 --label "max batch $mb" --json "$OUT/max-batch-$mb-round-$round.json" >/dev/null
    stop_server
    rm -rf "$WORK/data"
    /usr/bin/python3 - "$OUT/max-batch-$mb-round-$round.json" "$mb" "$round" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
l = r["job_latency_s"]
print(f"  round {sys.argv[3]}, max batch {sys.argv[2]}: {r['images_per_min']:.2f} images/min, "
      f"job latency p50 {l['p50']:.1f} s, p95 {l['p95']:.1f} s, {r['succeeded']} jobs")
PY
  done
done
/usr/bin/python3 - "$OUT" $MAX_BATCHES <<'PY'
import glob, json, statistics, sys
out, batches = sys.argv[1], sys.argv[2:]
base = None
for mb in batches:
    v = [json.load(open(f))["images_per_min"] for f in sorted(glob.glob(f"{out}/max-batch-{mb}-round-*.json"))]
    m = statistics.median(v)
    base = base or m
    print(f"max batch {mb}: median {m:.2f} images/min ({100 * (m / base - 1):+.1f}% against max batch {batches[0]})")
PY
