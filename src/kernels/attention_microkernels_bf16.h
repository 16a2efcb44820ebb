// The bfloat16 micro-kernels of the fused attention (src/kernels/attention.cpp, ComputeType::bf16): the same
// FlashAttention blocking (Dao et al. 2022) and transposed layouts as attention_microkernels.h, queries along the
// SIMD lanes, but the two products S = Q K^T and O = P V take bf16 inputs with fp32 accumulation through
// AVX512_BF16's vdpbf16ps (_mm512_dpbf16_ps): each 32-bit lane i of the accumulator gets
//   acc[i] += a[2i] * b[2i] + a[2i+1] * b[2i+1]
// with a and b 32 bf16 each, i.e. the dot product of a PAIR of bf16 values per lane, exact products and fp32
// sums. So every operand is stored as 32-bit pairs (low half = the even element, high half = the odd one):
//   qt [D2 x kQueryBlock]    Q^T pre-scaled by log2(e)/sqrt(D), pairs along the head dim: qt[e][i] = (q[i][2e],
//   q[i][2e+1]) k  [n x D2]              K rows, pairs along the head dim (a row of d bf16, zero-padded to even length)
//   pt [n2 x kQueryBlock]    P^T, pairs of keys per query lane: pt[r][i] = (p[2r][i], p[2r+1][i])
//   v  [n2 x D]              V, pairs along the key index: v[r][e] = (v[2r][e], v[2r+1][e])
// with D2 = ceil(D / 2) and n2 = ceil(n / 2); the missing element of an odd tail is zero. A 32-bit broadcast of
// one K or V pair against the query vectors then does two multiply-adds per lane where the fp32 kernel's FMA did
// one. The softmax statistics (max, exp, sum, rescale) stay fp32: S^T is stored as fp32, and only P is rounded.
// The scores come out in log2 units (Q carries the log2(e) factor), so the softmax takes 2^(s - max) = e^(s' -
// max') with exp2_softmax, half the instructions of a full-accuracy e^x: at SD's first level (40-wide heads) the
// softmax costs about as much as either product.
// Every fp32 -> bf16 rounding is round-to-nearest-even (vcvtne2ps2bf16, _mm512_cvtne2ps_pbh).
#pragma once
#include "kernels/attention_microkernels.h"

#if defined(__AVX512BF16__)
#include <immintrin.h>

namespace sdcpu::attention_bf16_detail {

using attention_detail::dispatch_vecs;
using attention_detail::kKeyBlock;
using attention_detail::kMaxVecs;
using attention_detail::kQueryBlock;
using attention_detail::kTileDims;
using attention_detail::kTileKeys;
using simd::kWidth;
static_assert(kWidth == 16 && kKeyBlock % 2 == 0, "bf16 attention: AVX-512 lanes, key blocks of whole pairs");

// acc + the pairwise bf16 dot products of a and b (vdpbf16ps). The casts reinterpret the 512 bits.
inline __m512 dot2(__m512 acc, __m512i a, __m512i b) { return _mm512_dpbf16_ps(acc, (__m512bh)a, (__m512bh)b); }

// 32-bit lane i = (bf16(a[i]) low, bf16(b[i]) high), rounded to nearest even. vcvtne2ps2bf16 puts bf16(a) in the
// low 16 words and bf16(b) in the high 16; vpermw interleaves them (word 2i <- i, word 2i+1 <- 16 + i).
inline __m512i pack_pairs(__m512 a, __m512 b) {
  const __m512i interleave =
      _mm512_set_epi32(0x001F000F, 0x001E000E, 0x001D000D, 0x001C000C, 0x001B000B, 0x001A000A, 0x00190009, 0x00180008,
                       0x00170007, 0x00160006, 0x00150005, 0x00140004, 0x00130003, 0x00120002, 0x00110001, 0x00100000);
  return _mm512_permutexvar_epi16(interleave, (__m512i)_mm512_cvtne2ps_pbh(b, a));
}

// The low and high bf16 of each pair, widened back to fp32 (exact: bf16 is fp32's upper half). The zero-masking
// shift with all lanes is vpslld itself; the unmasked intrinsic trips GCC 12's -Wmaybe-uninitialized (bug 105593).
inline __m512 low_half(__m512i pairs) { return _mm512_castsi512_ps(_mm512_maskz_slli_epi32(simd::kAll, pairs, 16)); }
inline __m512 high_half(__m512i pairs) {
  return _mm512_castsi512_ps(_mm512_and_si512(pairs, _mm512_set1_epi32(static_cast<int>(0xFFFF0000u))));
}

// 2^t for the softmax's t = s - max <= 0, to 2.7e-6 relative (a thousandth of the bf16 rounding of P that follows,
// 2^-9): t = n + f with n = round(t) and f in [-0.5, 0.5], 2^f by a degree-4 polynomial (coefficients fitted by
// the Remez exchange algorithm for minimax relative error on [-0.5, 0.5]: 2.59e-6, plus fp32 rounding), scaled
// by 2^n (vscalefps).
// t is clamped to -150 first, where the result is exactly 0 (2^-150 rounds to zero): so -inf (a masked key) gives
// 0, and a NaN stays NaN (vmaxps returns its second operand on NaN).
// (The masked forms with all lanes are the plain instructions; the unmasked intrinsics trip GCC 12's
// -Wmaybe-uninitialized, bug 105593.)
inline __m512 exp2_softmax(__m512 t) {
  t = simd::max(_mm512_set1_ps(-150.0f), t);
  const __m512 n = _mm512_mask_roundscale_ps(t, simd::kAll, t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_sub_ps(t, n);
  __m512 p = _mm512_set1_ps(0.00957010191f);
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.0559178603f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.240247448f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.693121815f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.999999261f));
  return _mm512_mask_scalef_ps(p, simd::kAll, p, n);
}

// The first min(16, max(0, n)) lanes.
inline __mmask16 first_lanes(int64_t n) {
  return n >= 16 ? __mmask16{0xFFFF} : n <= 0 ? __mmask16{0} : static_cast<__mmask16>((1u << n) - 1);
}

// A K row of d floats as ceil(d / 2) pairs: the row's bf16 values in order, zero-padded to even length.
inline void pack_k_row(const float* k, int64_t d, uint32_t* out) {
  auto* words = reinterpret_cast<uint16_t*>(out);
  const int64_t d_even = (d + 1) / 2 * 2;
  for (int64_t e = 0; e < d_even; e += 16) {
    const __m512 x = _mm512_maskz_loadu_ps(first_lanes(d - e), k + e);  // lane d of an odd row loads 0
    _mm256_mask_storeu_epi16(words + e, first_lanes(d_even - e), (__m256i)_mm512_cvtneps_pbh(x));
  }
}

// out[e] = (bf16(a[e]), bf16(b[e])) for e < n; b == nullptr reads as zeros (the pad key of an odd count).
inline void pack_row_pairs(const float* a, const float* b, int64_t n, uint32_t* out) {
  for (int64_t e = 0; e < n; e += 16) {
    const __mmask16 m = first_lanes(n - e);
    const __m512 x = _mm512_maskz_loadu_ps(m, a + e);
    const __m512 y = b ? _mm512_maskz_loadu_ps(m, b + e) : _mm512_setzero_ps();
    _mm512_mask_storeu_epi32(out + e, m, pack_pairs(x, y));
  }
}

// st[r][:] = sum_e k[r][e] . qt[e][:] (pairs) for NR keys, and tile_max = max(tile_max, max_r st[r][:]), as
// attention_detail::score_tile: 6 x 4 accumulators, 4 query vectors and one 32-bit K broadcast per step.
template <int V, int NR>
inline void score_tile(const uint32_t* qt, const uint32_t* k, int64_t d2, float* st, float* tile_max) {
  __m512 acc[NR][V];
#pragma GCC unroll 8
  for (int r = 0; r < NR; ++r)
#pragma GCC unroll 8
    for (int m = 0; m < V; ++m) acc[r][m] = _mm512_setzero_ps();
  for (int64_t e = 0; e < d2; ++e) {
    __m512i qv[V];
#pragma GCC unroll 8
    for (int m = 0; m < V; ++m) qv[m] = _mm512_loadu_si512(qt + e * kQueryBlock + m * kWidth);
#pragma GCC unroll 8
    for (int r = 0; r < NR; ++r) {
      const __m512i kr = _mm512_set1_epi32(static_cast<int>(k[r * d2 + e]));
#pragma GCC unroll 8
      for (int m = 0; m < V; ++m) acc[r][m] = dot2(acc[r][m], kr, qv[m]);
    }
  }
#pragma GCC unroll 8
  for (int m = 0; m < V; ++m) {
    __m512 mx = simd::load(tile_max + m * kWidth);
#pragma GCC unroll 8
    for (int r = 0; r < NR; ++r) {
      simd::store(st + r * kQueryBlock + m * kWidth, acc[r][m]);
      mx = simd::max(acc[r][m], mx);
    }
    simd::store(tile_max + m * kWidth, mx);
  }
}

template <int V, int NR>
inline void score_tail(const uint32_t* qt, const uint32_t* k, int64_t d2, int64_t nr, float* st, float* tile_max) {
  if constexpr (NR > 0) {
    if (nr == NR)
      score_tile<V, NR>(qt, k, d2, st, tile_max);
    else
      score_tail<V, NR - 1>(qt, k, d2, nr, st, tile_max);
  }
}

// S^T [n x vecs*16] (fp32) = K[0:n] Q^T for packed K rows (d2 pairs each) and the packed query block.
inline void scores(int vecs, const uint32_t* qt, const uint32_t* k, int64_t d2, int64_t n, float* st, float* tile_max) {
  dispatch_vecs(vecs, [&]<int V>() {
    for (int m = 0; m < V; ++m) simd::store(tile_max + m * kWidth, simd::set1(-INFINITY));
    int64_t r = 0;
    for (; r + kTileKeys <= n; r += kTileKeys)
      score_tile<V, kTileKeys>(qt, k + r * d2, d2, st + r * kQueryBlock, tile_max);
    score_tail<V, kTileKeys - 1>(qt, k + r * d2, d2, n - r, st + r * kQueryBlock, tile_max);
  });
}

// ot[e][:] = ot[e][:] * c[:] + sum_r v[r][e] . pt[r][:] (pairs of keys) for ND head dims.
template <int V, int ND>
inline void pv_tile(const uint32_t* pt, int64_t n2, const uint32_t* v, int64_t ldv, const float* correction,
                    float* ot) {
  __m512 acc[ND][V];
#pragma GCC unroll 8
  for (int m = 0; m < V; ++m) {
    const __m512 c = simd::load(correction + m * kWidth);
#pragma GCC unroll 8
    for (int e = 0; e < ND; ++e) acc[e][m] = simd::mul(simd::load(ot + e * kQueryBlock + m * kWidth), c);
  }
  for (int64_t r = 0; r < n2; ++r) {
    __m512i p[V];
#pragma GCC unroll 8
    for (int m = 0; m < V; ++m) p[m] = _mm512_loadu_si512(pt + r * kQueryBlock + m * kWidth);
#pragma GCC unroll 8
    for (int e = 0; e < ND; ++e) {
      const __m512i ve = _mm512_set1_epi32(static_cast<int>(v[r * ldv + e]));
#pragma GCC unroll 8
      for (int m = 0; m < V; ++m) acc[e][m] = dot2(acc[e][m], ve, p[m]);
    }
  }
#pragma GCC unroll 8
  for (int e = 0; e < ND; ++e)
#pragma GCC unroll 8
    for (int m = 0; m < V; ++m) simd::store(ot + e * kQueryBlock + m * kWidth, acc[e][m]);
}

template <int V, int ND>
inline void pv_tail(const uint32_t* pt, int64_t n2, const uint32_t* v, int64_t ldv, const float* correction, float* ot,
                    int64_t nd) {
  if constexpr (ND > 0) {
    if (nd == ND)
      pv_tile<V, ND>(pt, n2, v, ldv, correction, ot);
    else
      pv_tail<V, ND - 1>(pt, n2, v, ldv, correction, ot, nd);
  }
}

// O^T = O^T diag(correction) + V^T P^T over n2 key pairs; v is the block's first pair row (row stride ldv = D).
inline void accumulate_pv(int vecs, const uint32_t* pt, int64_t n2, const uint32_t* v, int64_t ldv, int64_t d,
                          const float* correction, float* ot) {
  dispatch_vecs(vecs, [&]<int V>() {
    int64_t e = 0;
    for (; e + kTileDims <= d; e += kTileDims)
      pv_tile<V, kTileDims>(pt, n2, v + e, ldv, correction, ot + e * kQueryBlock);
    pv_tail<V, kTileDims - 1>(pt, n2, v + e, ldv, correction, ot + e * kQueryBlock, d - e);
  });
}

// attention_detail::online_softmax on scores in log2 units (exp2_softmax), but P is written as bf16 pairs of keys, pt[r
// / 2][i], IN PLACE over S^T: pair row r / 2 lies at or before the fp32 rows r and r + 1 it is made from, which are
// read first, and each query vector's columns are independent. An odd n gets a zero partner for its last key. The row
// sum adds the ROUNDED probabilities, the weights P V actually applies, so the output stays an exact convex combination
// of the bf16 values (its weights sum to 1 up to fp32 rounding) and the P rounding only perturbs relative weights.
inline void online_softmax(int vecs, int64_t n, const float* tile_max, float* st, float* row_max, float* row_sum,
                           float* correction) {
  auto* pt = reinterpret_cast<uint32_t*>(st);
  for (int m = 0; m < vecs; ++m) {
    const float* s = st + m * kWidth;
    const __m512 old_max = simd::load(row_max + m * kWidth);
    const __m512 mx = simd::max(simd::load(tile_max + m * kWidth), old_max);
    simd::store(row_max + m * kWidth, mx);
    const __m512 shift = simd::max(mx, simd::set1(-FLT_MAX));
    const __m512 c = exp2_softmax(simd::sub(old_max, shift));
    __m512 sum0 = simd::zero(), sum1 = simd::zero();
    for (int64_t r = 0; r < n; r += 2) {
      const __m512 p0 = exp2_softmax(simd::sub(simd::load(s + r * kQueryBlock), shift));
      const __m512 p1 =
          r + 1 < n ? exp2_softmax(simd::sub(simd::load(s + (r + 1) * kQueryBlock), shift)) : simd::zero();
      const __m512i pair = pack_pairs(p0, p1);
      _mm512_storeu_si512(pt + (r / 2) * kQueryBlock + m * kWidth, pair);
      sum0 = simd::add(sum0, low_half(pair));
      sum1 = simd::add(sum1, high_half(pair));
    }
    simd::store(correction + m * kWidth, c);
    simd::store(row_sum + m * kWidth, simd::fmadd(simd::load(row_sum + m * kWidth), c, simd::add(sum0, sum1)));
  }
}

}  // namespace sdcpu::attention_bf16_detail

#endif  // __AVX512BF16__
