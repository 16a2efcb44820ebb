// A thin fp32 SIMD vector type for our own kernels, and a vectorized exp.
//
// One ISA is chosen at compile time (the project builds with -march=native): AVX-512F (16 lanes), else
// AVX2+FMA (8 lanes), else plain scalar code (1 lane) so that the kernels still compile and stay correct
// anywhere. Kernels are written once against these few inline functions and take kWidth as the lane count.
#pragma once
#include <cmath>
#include <cstdint>

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#endif

namespace sdcpu::simd {

#if defined(__AVX512F__)

constexpr int kWidth = 16;
constexpr const char* kIsa = "avx512";
using Vec = __m512;
inline Vec zero() { return _mm512_setzero_ps(); }
inline Vec set1(float x) { return _mm512_set1_ps(x); }
inline Vec load(const float* p) { return _mm512_loadu_ps(p); }
inline void store(float* p, Vec v) { _mm512_storeu_ps(p, v); }
inline Vec add(Vec a, Vec b) { return _mm512_add_ps(a, b); }
inline Vec sub(Vec a, Vec b) { return _mm512_sub_ps(a, b); }
inline Vec mul(Vec a, Vec b) { return _mm512_mul_ps(a, b); }
inline Vec fmadd(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }  // a * b + c, one rounding
// The unmasked forms of max/min/roundscale/scalef start from _mm512_undefined_ps(), which GCC 12 reports as
// -Wmaybe-uninitialized once inlined (GCC bug 105593); the all-ones-mask forms compile to the same instruction.
constexpr __mmask16 kAll = 0xFFFF;
// max(a, b) returns b when either is NaN (as MAXPS does), so max(constant, x) propagates a NaN x.
inline Vec max(Vec a, Vec b) { return _mm512_mask_max_ps(a, kAll, a, b); }
inline Vec min(Vec a, Vec b) { return _mm512_mask_min_ps(a, kAll, a, b); }

#elif defined(__AVX2__) && defined(__FMA__)

constexpr int kWidth = 8;
constexpr const char* kIsa = "avx2";
using Vec = __m256;
inline Vec zero() { return _mm256_setzero_ps(); }
inline Vec set1(float x) { return _mm256_set1_ps(x); }
inline Vec load(const float* p) { return _mm256_loadu_ps(p); }
inline void store(float* p, Vec v) { _mm256_storeu_ps(p, v); }
inline Vec add(Vec a, Vec b) { return _mm256_add_ps(a, b); }
inline Vec sub(Vec a, Vec b) { return _mm256_sub_ps(a, b); }
inline Vec mul(Vec a, Vec b) { return _mm256_mul_ps(a, b); }
inline Vec fmadd(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
inline Vec max(Vec a, Vec b) { return _mm256_max_ps(a, b); }
inline Vec min(Vec a, Vec b) { return _mm256_min_ps(a, b); }

#else

constexpr int kWidth = 1;
constexpr const char* kIsa = "scalar";
using Vec = float;
inline Vec zero() { return 0.0f; }
inline Vec set1(float x) { return x; }
inline Vec load(const float* p) { return *p; }
inline void store(float* p, Vec v) { *p = v; }
inline Vec add(Vec a, Vec b) { return a + b; }
inline Vec sub(Vec a, Vec b) { return a - b; }
inline Vec mul(Vec a, Vec b) { return a * b; }
inline Vec fmadd(Vec a, Vec b, Vec c) { return std::fma(a, b, c); }
inline Vec max(Vec a, Vec b) { return a > b ? a : b; }  // b when either is NaN, like MAXPS
inline Vec min(Vec a, Vec b) { return a < b ? a : b; }

#endif

// Vectorized e^x, fp32 (Cephes expf, S. Moshier): x = n ln2 + r with n = round(x / ln2) and |r| <= ln2 / 2
// (Cody-Waite: ln2 split in two so n * ln2_hi is exact), e^r by a degree-7 polynomial (1 + r + r^2 P5(r),
// minimax coefficients), then scaled by 2^n.
// Error bound: at most 2 ulp relative to the correctly rounded e^x for x in [-87.33, 88] (Cephes states 1.7e-7
// peak relative error; tests/test_kernels_attention.cpp measures every float in the range softmax uses).
// Below ln(FLT_MIN) = -87.3365 (including -inf) the result is exactly 0: those values would be subnormal, and a
// softmax term that small next to its row maximum's e^0 = 1 cannot change an fp32 sum. Above 88 the result is
// not meaningful (softmax only evaluates x <= 0). A NaN x gives NaN.
inline Vec exp(Vec x) {
  constexpr float kMinArg = -87.33654475f, kMaxArg = 88.0f;
  const Vec xc = min(set1(kMaxArg), max(set1(kMinArg), x));
  // n = round(x log2 e); r = x - n ln2 in two steps (ln2_hi has few mantissa bits, so n * ln2_hi is exact).
#if defined(__AVX512F__)
  const Vec n = _mm512_mask_roundscale_ps(xc, kAll, mul(xc, set1(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
#elif defined(__AVX2__) && defined(__FMA__)
  const Vec n = _mm256_round_ps(mul(xc, set1(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
#else
  const Vec n = std::nearbyint(xc * 1.44269504088896341f);
#endif
  Vec r = fmadd(n, set1(-0.693359375f), xc);
  r = fmadd(n, set1(2.12194440e-4f), r);
  Vec p = set1(1.9875691500e-4f);
  p = fmadd(p, r, set1(1.3981999507e-3f));
  p = fmadd(p, r, set1(8.3334519073e-3f));
  p = fmadd(p, r, set1(4.1665795894e-2f));
  p = fmadd(p, r, set1(1.6666665459e-1f));
  p = fmadd(p, r, set1(5.0000001201e-1f));
  p = fmadd(p, mul(r, r), r);
  p = add(p, set1(1.0f));
  // Scale by 2^n (n in [-126, 127], so 2^n is a normal float), and flush results below FLT_MIN to 0.
#if defined(__AVX512F__)
  p = _mm512_mask_scalef_ps(p, kAll, p, n);
  return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, set1(kMinArg), _CMP_NLT_UQ), p);
#elif defined(__AVX2__) && defined(__FMA__)
  const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  p = mul(p, _mm256_castsi256_ps(bits));
  return _mm256_and_ps(p, _mm256_cmp_ps(x, set1(kMinArg), _CMP_NLT_UQ));
#else
  p = std::ldexp(p, static_cast<int>(n));
  return (x < kMinArg) ? 0.0f : p;
#endif
}

}  // namespace sdcpu::simd
