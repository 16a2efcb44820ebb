// A thin fp32 SIMD vector type for our own kernels, a vectorized exp and exp2, and bfloat16 stores.
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
inline Vec div(Vec a, Vec b) { return _mm512_div_ps(a, b); }
inline Vec abs(Vec a) { return _mm512_abs_ps(a); }
// |mag| with the sign bit of `sign`.
inline Vec copysign(Vec mag, Vec sign) {
  return _mm512_castsi512_ps(_mm512_ternarylogic_epi32(_mm512_castps_si512(mag), _mm512_castps_si512(sign),
                                                       _mm512_set1_epi32(0x7FFFFFFF), 0xE4));  // mask ? mag : sign
}
// Lanes where a > b (ordered: false for NaN) take if_true, the others if_false.
inline Vec select_gt(Vec a, Vec b, Vec if_true, Vec if_false) {
  return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, b, _CMP_GT_OQ), if_false, if_true);
}
// The first n lanes (0 <= n < kWidth) from / to memory; the others read as 0 and are not written. For loop tails:
// nothing past p + n is touched, so a tail never reads or writes beyond its buffer.
inline Vec load_partial(const float* p, int n) {
  return _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << n) - 1), p);
}
inline void store_partial(float* p, Vec v, int n) {
  _mm512_mask_storeu_ps(p, static_cast<__mmask16>((1u << n) - 1), v);
}
// Not _mm512_reduce_add_ps: its extract starts from an undefined vector too (the same GCC 12 warning).
inline float reduce_add(Vec v) {
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, v);
  float s = 0;
  for (float l : lanes) s += l;
  return s;
}

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
inline Vec div(Vec a, Vec b) { return _mm256_div_ps(a, b); }
inline Vec abs(Vec a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a); }
inline Vec copysign(Vec mag, Vec sign) {
  const Vec sign_bit = _mm256_set1_ps(-0.0f);
  return _mm256_or_ps(_mm256_andnot_ps(sign_bit, mag), _mm256_and_ps(sign_bit, sign));
}
inline Vec select_gt(Vec a, Vec b, Vec if_true, Vec if_false) {
  return _mm256_blendv_ps(if_false, if_true, _mm256_cmp_ps(a, b, _CMP_GT_OQ));
}
inline __m256i first_lanes(int n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
inline Vec load_partial(const float* p, int n) { return _mm256_maskload_ps(p, first_lanes(n)); }
inline void store_partial(float* p, Vec v, int n) { _mm256_maskstore_ps(p, first_lanes(n), v); }
inline float reduce_add(Vec v) {
  const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  return _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)));
}

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
inline Vec div(Vec a, Vec b) { return a / b; }
inline Vec abs(Vec a) { return std::fabs(a); }
inline Vec copysign(Vec mag, Vec sign) { return std::copysign(mag, sign); }
inline Vec select_gt(Vec a, Vec b, Vec if_true, Vec if_false) { return a > b ? if_true : if_false; }
inline Vec load_partial(const float* p, int n) { return n > 0 ? *p : 0.0f; }
inline void store_partial(float* p, Vec v, int n) {
  if (n > 0) *p = v;
}
inline float reduce_add(Vec v) { return v; }

#endif

// ---- bfloat16 stores ------------------------------------------------------------------------------------------
// fp32 -> bfloat16 (the upper 16 bits of the float) rounded to nearest even, a NaN kept a (quiet) NaN: the
// rounding of vcvtneps2bf16 and of oneDNN's f32 -> bf16 reorder, so a kernel that writes a convolution's bf16 input
// itself gives the convolution the same bits the reorder would.
inline uint16_t to_bf16(float x) {
  uint32_t bits;
  __builtin_memcpy(&bits, &x, sizeof bits);
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);
  return static_cast<uint16_t>((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
}

#if defined(__AVX512F__)
inline __m256i to_bf16(Vec v) {
#if defined(__AVX512BF16__)
  return (__m256i)_mm512_cvtneps_pbh(v);
#else
  const __m512i bits = _mm512_castps_si512(v);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
  __m512i r = _mm512_srli_epi32(_mm512_add_epi32(bits, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF))), 16);
  const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  r = _mm512_mask_or_epi32(r, nan, _mm512_srli_epi32(bits, 16), _mm512_set1_epi32(0x40));
  return _mm512_cvtepi32_epi16(r);
#endif
}
inline void store_bf16(uint16_t* p, Vec v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), to_bf16(v)); }
inline void store_bf16_partial(uint16_t* p, Vec v, int n) {
  _mm256_mask_storeu_epi16(p, static_cast<__mmask16>((1u << n) - 1), to_bf16(v));
}
#elif defined(__AVX2__) && defined(__FMA__)
inline __m128i to_bf16(Vec v) {
  const __m256i bits = _mm256_castps_si256(v);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
  __m256i r = _mm256_srli_epi32(_mm256_add_epi32(bits, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7FFF))), 16);
  const __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(0x40));
  r = _mm256_blendv_epi8(r, quiet, _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q)));
  return _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));  // every value < 2^16
}
inline void store_bf16(uint16_t* p, Vec v) { _mm_storeu_si128(reinterpret_cast<__m128i*>(p), to_bf16(v)); }
inline void store_bf16_partial(uint16_t* p, Vec v, int n) {
  alignas(16) uint16_t lanes[8];
  _mm_store_si128(reinterpret_cast<__m128i*>(lanes), to_bf16(v));
  for (int i = 0; i < n; ++i) p[i] = lanes[i];
}
#else
inline void store_bf16(uint16_t* p, Vec v) { *p = to_bf16(v); }
inline void store_bf16_partial(uint16_t* p, Vec v, int n) {
  if (n > 0) *p = to_bf16(v);
}
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

// 2^t for t <= 0, the softmax's shifted scores in log2 units (kernels/attention.cpp), within 2 ulp of the correctly
// rounded value (tests/test_kernels_attention.cpp measures every float of [-126, 0] with a stride): t = n + f with
// n = round(t) and f in [-0.5, 0.5], 2^f by a degree-6 polynomial (coefficients from the Remez exchange algorithm
// for minimax relative error on [-0.5, 0.5]: 1.9e-9, below fp32's own rounding), scaled by 2^n. Half the work of
// exp(x): no two-step ln2 reduction, and no overflow side to guard. Below -126 (including -inf) the result is
// exactly 0, as exp's is below ln(FLT_MIN); a NaN gives NaN. Positive t is outside its contract.
inline Vec exp2_nonpositive(Vec t) {
  const Vec tc = max(set1(-127.0f), t);  // vmaxps keeps a NaN t (its second operand)
#if defined(__AVX512F__)
  const Vec n = _mm512_mask_roundscale_ps(tc, kAll, tc, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
#elif defined(__AVX2__) && defined(__FMA__)
  const Vec n = _mm256_round_ps(tc, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
#else
  const Vec n = std::nearbyint(tc);
#endif
  const Vec f = sub(tc, n);
  Vec p = set1(0.000153473201f);
  p = fmadd(p, f, set1(0.00134001545f));
  p = fmadd(p, f, set1(0.00961848424f));
  p = fmadd(p, f, set1(0.0555032808f));
  p = fmadd(p, f, set1(0.240226469f));
  p = fmadd(p, f, set1(0.693147206f));
  p = fmadd(p, f, set1(1.0f));
#if defined(__AVX512F__)
  p = _mm512_mask_scalef_ps(p, kAll, p, n);
  return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(t, set1(-126.0f), _CMP_NLT_UQ), p);
#elif defined(__AVX2__) && defined(__FMA__)
  const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  p = mul(p, _mm256_castsi256_ps(bits));
  return _mm256_and_ps(p, _mm256_cmp_ps(t, set1(-126.0f), _CMP_NLT_UQ));
#else
  return t < -126.0f ? 0.0f : std::ldexp(p, static_cast<int>(n));
#endif
}

// x * sigmoid(x) = x / (1 + e^-x) (torch.nn.SiLU), within a few ulp: exp's 2 ulp, one rounding each for the add
// and the correctly rounded division. For x > 87.3 e^-x is 0 and the result is x exactly; for x < -88 exp clamps
// its argument, so the result is x / (1 + e^88), which is below 1e-30 in magnitude for |x| < 1e8.
inline Vec silu(Vec x) { return div(x, add(set1(1.0f), exp(sub(zero(), x)))); }

// Vectorized erf, fp32: Norbert Juffa's faithfully rounded erff ("Efficient faithfully rounded implementation of
// error function erff", Stack Overflow question 35148198, 2016; also the erf of MLX and ncnn), both of its
// branches evaluated and blended per lane:
//   |x| <= 0.927734375: erf(x) = x + x P(x^2), P of degree 5 (max error 0.99 ulp);
//   |x| >  0.927734375: erf(x) = sign(x) (1 - e^Q(|x|)), Q of degree 7 (max error 0.995 ulp with a correctly
//   rounded expf; our exp adds at most 2 ulp of e^Q <= 0.19, i.e. below 3e-8 absolute).
// Measured against std::erf on a dense grid over [-10, 10] and the tails (tests/test_kernels_reference.cpp,
// ErfMatchesStdErf): at most 5.6e-8 absolute (under one ulp of 1), 7.9e-8 relative for |x| < 0.5; for comparison
// the Abramowitz-Stegun 7.1.26 form PyTorch's vectorized erf uses is 1.5e-7 absolute. erf(+-0) = +-0, erf(+-inf) = +-1
// (|x| is clamped to 10, where erf is 1 in fp32), NaN gives NaN.
inline Vec erf(Vec x) {
  const Vec t = min(set1(10.0f), abs(x));  // min keeps a NaN
  const Vec s = mul(x, x);
  Vec r = fmadd(set1(-1.72853470e-5f), t, set1(3.83197126e-4f));
  const Vec u = fmadd(set1(-3.88396438e-3f), t, set1(2.42546219e-2f));
  r = fmadd(r, mul(t, t), u);
  r = fmadd(r, t, set1(-1.06777877e-1f));
  r = fmadd(r, t, set1(-6.34846687e-1f));
  r = fmadd(r, t, set1(-1.28717512e-1f));
  r = fmadd(r, t, sub(zero(), t));
  const Vec large = copysign(sub(set1(1.0f), exp(r)), x);
  Vec p = set1(-5.96761703e-4f);
  p = fmadd(p, s, set1(4.99119423e-3f));
  p = fmadd(p, s, set1(-2.67681349e-2f));
  p = fmadd(p, s, set1(1.12819925e-1f));
  p = fmadd(p, s, set1(-3.76125336e-1f));
  p = fmadd(p, s, set1(1.28379166e-1f));
  const Vec small = fmadd(p, x, x);
  return select_gt(t, set1(0.927734375f), large, small);
}

}  // namespace sdcpu::simd
