#!/usr/bin/env bash
# End-to-end checks of the sdcpu command: a real generation with the demo model, and bad input that
# must end with a clear message and the documented exit code, never a crash.
# Usage: cli_test.sh SDCPU_BINARY SOURCE_DIR FIXTURES_DIR
set -uo pipefail
sdcpu=$1 src=$2 fixtures=$3
unset SDCPU_WEIGHT_CACHE  # the default weight cache is then $XDG_CACHE_HOME/sdcpu/weights: in $tmp, never ~/.cache
tmp=$(mktemp -d)
export XDG_CACHE_HOME="$tmp/xdg"
trap 'rm -rf "$tmp"' EXIT
passed=0 failed=0

# expect CODE NEEDLE -- ARGS...: runs sdcpu ARGS, checks the exit code and that stderr+stdout has NEEDLE.
expect() {
  local code=$1 needle=$2
  shift 3
  local out rc
  out=$("$sdcpu" "$@" 2>&1)
  rc=$?
  if [ "$rc" -eq "$code" ] && grep -qF -- "$needle" <<<"$out"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    echo "FAIL: sdcpu $* -> exit $rc (want $code), output:"
    echo "$out" | tail -5
    echo "(wanted to see: $needle)"
  fi
}

model="$src/models/tiny-sd"
gen=(generate --model "$model" --prompt "a red cube" --steps 2 --width 64 --height 64 --quiet)

expect 0 "seed 7" -- "${gen[@]}" --seed 7 --output "$tmp/a.png"
if grep -aq "Steps: 2, Sampler: DPM++ 2M, CFG scale: 7.5, Seed: 7, Size: 64x64" "$tmp/a.png"; then
  passed=$((passed + 1))
else
  failed=$((failed + 1)); echo "FAIL: PNG lacks the A1111 parameters chunk"
fi
expect 0 "b-2.png" -- "${gen[@]}" --batch-count 2 --output "$tmp/b.png"
[ -f "$tmp/b.png" ] && [ -f "$tmp/b-2.png" ] && passed=$((passed + 1)) || { failed=$((failed + 1)); echo "FAIL: batch files"; }
expect 0 "single file" -- info --model "$fixtures/tiny-sd.safetensors"

# Model families: info shows the detected one and its defaults; generate takes the defaults the user did not
# override (and says so); --family picks another family's defaults.
expect 0 "family:       sd1" -- info --model "$model"
expect 0 "defaults:     128x128, 20 steps, guidance 7.5, sampler dpmpp_2m" -- info --model "$model"
expect 0 "defaults:     128x128, 1 step, guidance 0, sampler euler" -- info --model "$model" --family sd-turbo
expect 2 "family" -- info --model "$model" --family sdxl-lightning
expect 0 "using the family's defaults: height 128, 1 step, guidance 0, sampler euler" -- \
  generate --model "$model" --prompt "a red cube" --width 64 --family sd-turbo --seed 7 --output "$tmp/turbo.png"
if grep -aq "Steps: 1, Sampler: Euler, CFG scale: 0, Seed: 7, Size: 64x128" "$tmp/turbo.png"; then
  passed=$((passed + 1))
else
  failed=$((failed + 1)); echo "FAIL: the sd-turbo family's defaults were not applied"
fi

# Scheduler settings: info shows where each value comes from; --timestep-spacing overrides it and is recorded.
expect 0 'timestep_spacing        "leading"  (file)' -- info --model "$model" --sampler euler
expect 0 'timestep_spacing        "leading"  (single-file default)' -- info --model "$fixtures/tiny-sd.safetensors"
expect 0 'timestep_spacing        "trailing"  (option)' -- info --model "$model" --timestep-spacing trailing
expect 0 "seed 7" -- "${gen[@]}" --seed 7 --timestep-spacing trailing --output "$tmp/trailing.png"
if grep -aq "Timestep spacing: trailing" "$tmp/trailing.png" && ! grep -aq "Timestep spacing" "$tmp/a.png" &&
  ! cmp -s "$tmp/a.png" "$tmp/trailing.png"; then
  passed=$((passed + 1))
else
  failed=$((failed + 1)); echo "FAIL: --timestep-spacing not applied or not recorded"
fi
expect 2 "timestep-spacing" -- "${gen[@]}" --timestep-spacing uniform --output "$tmp/x.png"

# Every sampler: the help names it with AUTOMATIC1111's name, info shows its diffusers class, and an image made
# with it records that name.
for entry in "pndm|PLMS|PNDMScheduler" "ddim|DDIM|DDIMScheduler" "euler|Euler|EulerDiscreteScheduler" \
  "euler_karras|Euler Karras|EulerDiscreteScheduler" "euler_a|Euler a|EulerAncestralDiscreteScheduler" \
  "lms|LMS|LMSDiscreteScheduler" "heun|Heun|HeunDiscreteScheduler" "dpmpp_2m|DPM++ 2M|DPMSolverMultistepScheduler" \
  "dpmpp_2m_karras|DPM++ 2M Karras|DPMSolverMultistepScheduler" \
  "dpmpp_2m_sde|DPM++ 2M SDE|DPMSolverMultistepScheduler" \
  "dpmpp_2m_sde_karras|DPM++ 2M SDE Karras|DPMSolverMultistepScheduler" "unipc|UniPC|UniPCMultistepScheduler" \
  "lcm|LCM|LCMScheduler"; do
  IFS='|' read -r name a1111 cls <<<"$entry"
  expect 0 "$name ($a1111)" -- generate --help
  expect 0 "scheduler:    $name ($cls)" -- info --model "$model" --sampler "$name"
  expect 0 "seed 7" -- "${gen[@]}" --seed 7 --sampler "$name" --output "$tmp/sampler.png"
  if grep -aq "Sampler: $a1111, " "$tmp/sampler.png"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1)); echo "FAIL: the PNG made with $name does not say Sampler: $a1111"
  fi
done
expect 2 "steps must be at most 50 for lcm" -- "${gen[@]}" --sampler lcm --steps 51 --output "$tmp/x.png"

# The weight cache: written by the first start, mapped by the second; the images are the same bytes.
expect 0 "seed 7" -- "${gen[@]}" --seed 7 --weight-cache "$tmp/cache" --output "$tmp/c1.png"
expect 0 "unet loaded (was valid)" -- info --model "$model" --weight-cache "$tmp/cache"
SDCPU_WEIGHT_CACHE="$tmp/cache" expect 0 "seed 7" -- "${gen[@]}" --seed 7 --low-memory --output "$tmp/c2.png"
if cmp -s "$tmp/a.png" "$tmp/c1.png" && cmp -s "$tmp/a.png" "$tmp/c2.png"; then
  passed=$((passed + 1))
else
  failed=$((failed + 1)); echo "FAIL: images with the weight cache differ"
fi
[ "$(ls "$tmp/cache" | wc -l)" -eq 3 ] && passed=$((passed + 1)) || { failed=$((failed + 1)); echo "FAIL: cache files"; }
expect 0 "not written" -- info --model "$model" --weight-cache "$tmp/a.png"
# The defaults: the first generate above wrote the cache into $XDG_CACHE_HOME/sdcpu/weights; lean memory. --memory
# fast, --no-weight-cache and --weight-cache '' give the same image.
ls "$tmp/xdg/sdcpu/weights" | grep -q '^unet-fp32-.*\.sdcw$' && ! ls "$tmp/xdg/sdcpu/weights" | grep -q '\.tmp\.' &&
  passed=$((passed + 1)) || { failed=$((failed + 1)); echo "FAIL: no default cache files in \$XDG_CACHE_HOME/sdcpu/weights"; }
expect 0 "unet loaded (was valid): $tmp/xdg/sdcpu/weights/unet-fp32-" -- info --model "$model"
expect 0 "seed 7" -- "${gen[@]}" --seed 7 --memory fast --output "$tmp/fast.png"
expect 0 "seed 7" -- "${gen[@]}" --seed 7 --memory fast --no-weight-cache --output "$tmp/fast-nocache.png"
expect 0 "seed 7" -- "${gen[@]}" --seed 7 --weight-cache '' --output "$tmp/lean-nocache.png"
if cmp -s "$tmp/a.png" "$tmp/fast.png" && cmp -s "$tmp/a.png" "$tmp/fast-nocache.png" &&
  cmp -s "$tmp/a.png" "$tmp/lean-nocache.png"; then
  passed=$((passed + 1))
else
  failed=$((failed + 1)); echo "FAIL: --memory fast or no weight cache changed the image"
fi
expect 0 "lean: one network's weights" -- generate --help
expect 0 "--no-weight-cache" -- serve --help
expect 2 "--memory: tiny not in {lean,fast}" -- "${gen[@]}" --memory tiny --output "$tmp/x.png"
expect 2 "excludes" -- "${gen[@]}" --no-weight-cache --weight-cache "$tmp/cache" --output "$tmp/x.png"
# A default directory that cannot be written: the image is made all the same, and a single line says why.
out=$(SDCPU_WEIGHT_CACHE="$tmp/a.png/weights" "$sdcpu" "${gen[@]}" --seed 7 --output "$tmp/unwritable.png" 2>&1)
rc=$?
if [ "$rc" -eq 0 ] && [ "$(grep -c "weight cache not written" <<<"$out")" -eq 1 ] &&
  cmp -s "$tmp/a.png" "$tmp/unwritable.png"; then
  passed=$((passed + 1))
else
  failed=$((failed + 1)); echo "FAIL: an unwritable default weight cache (exit $rc):"; echo "$out" | tail -5
fi

bench=(bench --model "$model" --width 64 --height 64 --steps 2 --runs 1 --quiet)
expect 0 "unet step" -- "${bench[@]}" --batch-sizes 1,2 --json "$tmp/bench.json"
grep -q '"unet_step_s"' "$tmp/bench.json" && passed=$((passed + 1)) || { failed=$((failed + 1)); echo "FAIL: bench JSON"; }
if grep -qwE "avx512_bf16|amx_bf16" /proc/cpuinfo; then
  expect 0 "psnr vs fp32" -- "${bench[@]}" --precision bf16
  expect 0 "precision:    bf16" -- info --model "$model" --precision auto
  expect 0 "seed 7" -- "${gen[@]}" --seed 7 --precision bf16 --output "$tmp/bf16.png"
else
  expect 2 "AVX512_BF16" -- "${bench[@]}" --precision bf16
  expect 2 "AVX512_BF16" -- "${gen[@]}" --precision bf16 --output "$tmp/x.png"
fi
expect 2 "precision" -- "${bench[@]}" --precision fp64
expect 2 "precision" -- "${gen[@]}" --precision fp64 --output "$tmp/x.png"
expect 2 "batch sizes" -- "${bench[@]}" --batch-sizes 1,x

# TAESD: --vae decodes with it (and the PNG says so); --preview-every N writes <output stem>-preview.png, a 64x64
# PNG here, and changes nothing in the image; what cannot work is refused before the model loads or with exit 3.
taesd="$src/tests/goldens/taesd/tiny-taesd"
expect 0 "seed 7" -- "${gen[@]}" --seed 7 --vae "$taesd" --output "$tmp/t.png"
if grep -aq "Model: tiny-sd, VAE: tiny-taesd," "$tmp/t.png" && ! cmp -s "$tmp/a.png" "$tmp/t.png"; then
  passed=$((passed + 1))
else
  failed=$((failed + 1)); echo "FAIL: --vae not applied or not recorded"
fi
png_size() { head -c 24 "$1" | tail -c 8 | od -An -tx1 | tr -d ' \n'; }  # IHDR width, height
expect 0 "seed 7" -- "${gen[@]}" --seed 7 --preview-every 1 --preview-vae "$taesd" --output "$tmp/p.png"
if [ "$(png_size "$tmp/p-preview.png")" = "0000004000000040" ] && cmp -s "$tmp/a.png" "$tmp/p.png"; then
  passed=$((passed + 1))
else
  failed=$((failed + 1)); echo "FAIL: --preview-every: no 64x64 preview, or the image changed"
fi
rm -f "$tmp/t-preview.png"
expect 0 "seed 7" -- "${gen[@]}" --seed 7 --steps 3 --preview-every 1 --vae "$taesd" --output "$tmp/t.png"
[ -f "$tmp/t-preview.png" ] && passed=$((passed + 1)) || { failed=$((failed + 1)); echo "FAIL: no preview with --vae"; }
expect 2 "needs a TAESD" -- generate --model "$tmp/nothing" --prompt x --preview-every 2 --output "$tmp/x.png"
expect 2 "preview every" -- "${gen[@]}" --preview-every -1 --vae "$taesd" --output "$tmp/x.png"
expect 2 "--preview-every N too" -- "${gen[@]}" --preview-vae "$taesd" --output "$tmp/x.png"
expect 2 "only without --vae" -- "${gen[@]}" --preview-every 1 --vae "$taesd" --preview-vae "$taesd" --output "$tmp/x.png"
mkdir -p "$tmp/taesd16" && cp "$taesd/diffusion_pytorch_model.safetensors" "$tmp/taesd16/" &&
  sed 's/"latent_channels": 4/"latent_channels": 16/' "$taesd/config.json" >"$tmp/taesd16/config.json"
expect 3 "a TAESD for the wrong latent space" -- "${gen[@]}" --vae "$tmp/taesd16" --output "$tmp/x.png"
expect 3 "not AutoencoderTiny" -- "${gen[@]}" --vae "$model/vae" --output "$tmp/x.png"
expect 3 "no such file" -- "${gen[@]}" --vae "$tmp/no-taesd" --output "$tmp/x.png"
expect 0 "taesd psnr vs vae" -- "${bench[@]}" --vae "$src/tests/goldens/taesd/taesd_decoder.safetensors" \
  --json "$tmp/bench-taesd.json"
grep -q '"decoder": "taesd"' "$tmp/bench-taesd.json" && grep -q '"psnr_db_vs_full_vae"' "$tmp/bench-taesd.json" &&
  passed=$((passed + 1)) || { failed=$((failed + 1)); echo "FAIL: bench --vae JSON"; }

expect 2 "width" -- "${gen[@]}" --width 100 --output "$tmp/x.png"
expect 2 "height" -- "${gen[@]}" --height 999999 --output "$tmp/x.png"
expect 2 "steps" -- "${gen[@]}" --steps 0 --output "$tmp/x.png"
expect 2 "steps" -- "${gen[@]}" --steps 100000 --output "$tmp/x.png"
expect 2 "UTF-8" -- "${gen[@]}" --prompt $'bad \xff\xfe bytes' --output "$tmp/x.png"
expect 2 "sampler" -- "${gen[@]}" --sampler dpmpp_sde_karras --output "$tmp/x.png"
expect 2 "batch count" -- "${gen[@]}" --batch-count 0 --output "$tmp/x.png"
expect 3 "no such file" -- "${gen[@]}" --model "$tmp/does-not-exist.safetensors" --output "$tmp/x.png"
head -c 100000 "$fixtures/tiny-sd.safetensors" >"$tmp/truncated.safetensors"
expect 3 "truncated" -- "${gen[@]}" --model "$tmp/truncated.safetensors" --output "$tmp/x.png"
printf 'not a model' >"$tmp/model.ckpt"
expect 3 "pickle" -- "${gen[@]}" --model "$tmp/model.ckpt" --output "$tmp/x.png"
expect 4 "cannot create" -- "${gen[@]}" --output "$tmp/no-such-dir/x.png"
expect 4 "is a directory" -- "${gen[@]}" --output "$tmp"
# Checked before the model loads: no "loaded" line, even with a model that does not exist.
out=$("$sdcpu" generate --model "$tmp/nothing" --prompt x --output "$tmp/no-such-dir/x.png" 2>&1)
[ $? -eq 4 ] && ! grep -q "loaded" <<<"$out" && passed=$((passed + 1)) || { failed=$((failed + 1)); echo "FAIL: output checked after loading: $out"; }
expect 2 "steps" -- generate --model "$tmp/nothing" --prompt x --steps 0 --output "$tmp/x.png"
expect 2 "threads must be between 0" -- "${gen[@]}" --threads 1000 --output "$tmp/x.png"
expect 2 "threads must be between 0" -- "${bench[@]}" --threads 1000
expect 2 "seed" -- "${gen[@]}" --seed -2 --output "$tmp/x.png"
# --seed -1 draws a seed in A1111's range, prints it and records it.
out=$("$sdcpu" "${gen[@]}" --seed -1 --output "$tmp/random.png" 2>&1)
seed=$(sed -nE 's/.*\(seed ([0-9]+)\).*/\1/p' <<<"$out")
if [ -n "$seed" ] && [ "$seed" -lt 4294967295 ] && grep -aq "Seed: $seed," "$tmp/random.png"; then
  passed=$((passed + 1))
else
  failed=$((failed + 1)); echo "FAIL: --seed -1: $out"
fi
[ ! -e "$tmp/x.png" ] && passed=$((passed + 1)) || { failed=$((failed + 1)); echo "FAIL: an error left a file"; }

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
