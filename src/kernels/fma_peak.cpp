#include "kernels/fma_peak.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <vector>

namespace sdcpu {
namespace {

// Independent accumulator chains per thread: FMA latency (4 cycles) x FMA ports (2) = 8 in flight is the
// minimum to saturate the units; 12 leaves slack for CPUs with longer latency and still fits in 16 registers
// (AVX2) together with the two operands.
constexpr int kChains = 12;
// Instructions per chain per inner call: long enough that loop overhead is noise.
constexpr int64_t kInner = 1 << 12;

// Each function returns a value depending on every accumulator so the compiler cannot drop the work.
#if defined(__AVX512F__)
// Through memory rather than _mm512_reduce_add_ps, whose GCC 12 expansion warns (-Wuninitialized).
float horizontal_sum(__m512 v) {
  alignas(64) float out[16];
  _mm512_store_ps(out, v);
  float s = 0;
  for (float x : out) s += x;
  return s;
}

constexpr int kFp32Lanes = 16;
__attribute__((noinline)) float fp32_chains(int64_t iters, float seed) {
  __m512 acc[kChains];
  for (int c = 0; c < kChains; ++c) acc[c] = _mm512_set1_ps(seed * static_cast<float>(c));
  // Multiplier just below 1 and a tiny addend keep values finite and normal for any iteration count.
  const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
  for (int64_t i = 0; i < iters; ++i)
    for (int c = 0; c < kChains; ++c) acc[c] = _mm512_fmadd_ps(acc[c], a, b);
  __m512 sum = acc[0];
  for (int c = 1; c < kChains; ++c) sum = _mm512_add_ps(sum, acc[c]);
  return horizontal_sum(sum);
}
#elif defined(__AVX2__) && defined(__FMA__)
constexpr int kFp32Lanes = 8;
__attribute__((noinline)) float fp32_chains(int64_t iters, float seed) {
  __m256 acc[kChains];
  for (int c = 0; c < kChains; ++c) acc[c] = _mm256_set1_ps(seed * static_cast<float>(c));
  const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
  for (int64_t i = 0; i < iters; ++i)
    for (int c = 0; c < kChains; ++c) acc[c] = _mm256_fmadd_ps(acc[c], a, b);
  __m256 sum = acc[0];
  for (int c = 1; c < kChains; ++c) sum = _mm256_add_ps(sum, acc[c]);
  alignas(32) float out[8];
  _mm256_store_ps(out, sum);
  float s = 0;
  for (float v : out) s += v;
  return s;
}
#else
constexpr int kFp32Lanes = 1;
__attribute__((noinline)) float fp32_chains(int64_t iters, float seed) {
  float acc[kChains];
  for (int c = 0; c < kChains; ++c) acc[c] = seed * static_cast<float>(c);
  for (int64_t i = 0; i < iters; ++i)
    for (int c = 0; c < kChains; ++c) acc[c] = acc[c] * 0.999999f + 1e-7f;
  float s = 0;
  for (float v : acc) s += v;
  return s;
}
#endif

#if defined(__AVX512BF16__)
constexpr bool kHaveBf16 = true;
__attribute__((noinline)) float bf16_chains(int64_t iters, float seed) {
  __m512 acc[kChains];
  for (int c = 0; c < kChains; ++c) acc[c] = _mm512_set1_ps(seed * static_cast<float>(c));
  // Small operands: 32 products of 1e-4 per lane per instruction stay far from overflow.
  const __m512bh a = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1e-2f), _mm512_set1_ps(1e-2f));
  for (int64_t i = 0; i < iters; ++i)
    for (int c = 0; c < kChains; ++c) acc[c] = _mm512_dpbf16_ps(acc[c], a, a);
  __m512 sum = acc[0];
  for (int c = 1; c < kChains; ++c) sum = _mm512_add_ps(sum, acc[c]);
  return horizontal_sum(sum);
}
#else
constexpr bool kHaveBf16 = false;
float bf16_chains(int64_t, float) { return 0; }
#endif

#if defined(__AVX512VNNI__)
constexpr bool kHaveInt8 = true;
__attribute__((noinline)) float int8_chains(int64_t iters, float seed) {
  __m512i acc[kChains];
  for (int c = 0; c < kChains; ++c) acc[c] = _mm512_set1_epi32(static_cast<int>(seed) * c);
  // u8 1 times s8 1: four products per lane per instruction; int32 wraps harmlessly.
  const __m512i a = _mm512_set1_epi8(1);
  for (int64_t i = 0; i < iters; ++i)
    for (int c = 0; c < kChains; ++c) acc[c] = _mm512_dpbusd_epi32(acc[c], a, a);
  __m512i sum = acc[0];
  for (int c = 1; c < kChains; ++c) sum = _mm512_add_epi32(sum, acc[c]);
  alignas(64) uint32_t out[16];
  _mm512_store_si512(out, sum);
  uint32_t total = 0;  // unsigned: wraps without undefined behaviour
  for (uint32_t v : out) total += v;
  return static_cast<float>(total);
}
#else
constexpr bool kHaveInt8 = false;
float int8_chains(int64_t, float) { return 0; }
#endif

// Operations one chain instruction does: an fp32 FMA lane 2; a vdpbf16ps lane 2 products + 2 adds; a vpdpbusd
// lane 4 products + 4 adds.
double flops_per_instruction(PeakPrecision p) {
  switch (p) {
    case PeakPrecision::kFp32:
      return 2.0 * kFp32Lanes;
    case PeakPrecision::kBf16:
      return 4.0 * 16;
    case PeakPrecision::kInt8:
      return 8.0 * 16;
  }
  return 0;
}

}  // namespace

bool fma_peak_supported(PeakPrecision precision) {
  if (precision == PeakPrecision::kFp32) return true;
  if (precision == PeakPrecision::kInt8) return kHaveInt8 && __builtin_cpu_supports("avx512vnni");
  return kHaveBf16 && __builtin_cpu_supports("avx512bf16");
}

double measure_fma_peak_gflops(PeakPrecision precision, int threads, double seconds) {
  if (!fma_peak_supported(precision)) return 0;
  const int team = threads > 0 ? threads : omp_get_max_threads();
  auto chains = precision == PeakPrecision::kFp32   ? fp32_chains
                : precision == PeakPrecision::kBf16 ? bf16_chains
                                                    : int8_chains;
  // Calibrate the inner count on one thread so one repetition lasts about `seconds`.
  int64_t iters = kInner;
  for (;;) {
    const auto t0 = std::chrono::steady_clock::now();
    volatile float sink = chains(iters, 1.0f);
    (void)sink;
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (dt >= seconds / 4 || iters > (int64_t{1} << 40)) {
      iters = static_cast<int64_t>(static_cast<double>(iters) * seconds / std::max(dt, 1e-9)) + 1;
      break;
    }
    iters *= 4;
  }
  double best = 0;
  std::vector<float> sinks(team);
  for (int rep = 0; rep < 3; ++rep) {
    double elapsed = 0;
#pragma omp parallel num_threads(team)
    {
      // Start together, and take the slowest thread's time: the team's throughput is what a kernel sees.
#pragma omp barrier
      const auto t0 = std::chrono::steady_clock::now();
      sinks[omp_get_thread_num()] = chains(iters, 1.0f + static_cast<float>(omp_get_thread_num()));
      const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
#pragma omp critical
      elapsed = std::max(elapsed, dt);
    }
    const double flops =
        static_cast<double>(team) * static_cast<double>(iters) * kChains * flops_per_instruction(precision);
    best = std::max(best, flops / elapsed / 1e9);
  }
  return best;
}

}  // namespace sdcpu
