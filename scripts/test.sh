#!/usr/bin/env bash
# The test command of the README and of CI:
#   1. installs dependencies (scripts/setup.sh), builds in build/ (Release) and runs every test,
#      including the full-size SD 1.5 architecture tests on a random-weight model written by
#      ../shared/tools/make_random_sd.py (3.4 GB, cached in build/sd15-random);
#   2. builds again with AddressSanitizer + UndefinedBehaviorSanitizer (build-asan/) and runs the
#      tests on the tiny models;
#   3. builds the libFuzzer targets with clang and runs each briefly (SDCPU_FUZZ_SECONDS, default 20).
# SDCPU_QUICK=1 runs step 1 only.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
jobs=$(nproc)

bash scripts/setup.sh

echo "== build (Release)"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$jobs"

shared_tools="$root/../shared/tools/make_random_sd.py"
sd15="$root/build/sd15-random"
if [ -f "$shared_tools" ] && [ ! -f "$sd15/unet/config.json" ]; then
  echo "== writing the full-size random SD 1.5 (diffusers layout, fp32) to $sd15"
  rm -rf "$sd15"
  /usr/bin/python3 "$shared_tools" --layout diffusers --dtype fp32 --seed 0 --out "$sd15.tmp" >/dev/null
  mv "$sd15.tmp" "$sd15"
fi
[ -f "$sd15/unet/config.json" ] && export SDCPU_SD15_RANDOM="$sd15"
sd15_single="$root/build/sd15-random-single.safetensors"
if [ -f "$shared_tools" ] && [ ! -f "$sd15_single" ]; then
  echo "== writing the full-size random SD 1.5 (single file, fp16) to $sd15_single"
  /usr/bin/python3 "$shared_tools" --layout single --dtype fp16 --seed 0 --out "$sd15_single.tmp" >/dev/null
  mv "$sd15_single.tmp" "$sd15_single"
fi
[ -f "$sd15_single" ] && export SDCPU_SD15_RANDOM_SINGLE="$sd15_single"

total_passed=0 total_failed=0
# run_ctest DIR [ENV...]: runs the ctest suite in DIR and adds its counts to the totals.
run_ctest() {
  local dir=$1
  shift
  (cd "$dir" && env "$@" ctest --output-on-failure -j 1) | tee "$dir/ctest.log"
  local line total failed
  line=$(grep -E "tests passed, [0-9]+ tests? failed out of [0-9]+" "$dir/ctest.log" | tail -n 1)
  failed=$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\1/' <<<"$line")
  total=$(sed -E 's/.* failed out of ([0-9]+).*/\1/' <<<"$line")
  total_passed=$((total_passed + total - failed))
  total_failed=$((total_failed + failed))
}

echo "== tests (Release)"
run_ctest build

if [ "${SDCPU_QUICK:-0}" = 1 ]; then
  echo "tests: $total_passed passed, $total_failed failed"
  exit 0
fi

echo "== build and tests with AddressSanitizer + UndefinedBehaviorSanitizer (tiny models)"
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSDCPU_SANITIZE=ON >/dev/null
cmake --build build-asan -j "$jobs"
run_ctest build-asan -u SDCPU_SD15_RANDOM -u SDCPU_SD15_RANDOM_SINGLE ASAN_OPTIONS=detect_leaks=1 \
  UBSAN_OPTIONS=print_stacktrace=1

echo "== fuzzing (libFuzzer, ${SDCPU_FUZZ_SECONDS:-20}s per target)"
CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSDCPU_FUZZ=ON >/dev/null
cmake --build build-fuzz -j "$jobs" --target $(cd fuzz && ls fuzz_*.cpp | sed 's/\.cpp$//')
for f in fuzz/fuzz_*.cpp; do
  name=$(basename "$f" .cpp)
  corpus="build-fuzz/corpus-$name"
  mkdir -p "$corpus"
  [ -d "fuzz/seeds/$name" ] && cp -n fuzz/seeds/"$name"/* "$corpus"/ 2>/dev/null || true
  echo "-- $name"
  "build-fuzz/$name" -max_total_time="${SDCPU_FUZZ_SECONDS:-20}" -rss_limit_mb=2048 -timeout=10 "$corpus" 2>&1 | tail -n 2
done
echo "== all checks passed"
echo "tests: $total_passed passed, $total_failed failed"
