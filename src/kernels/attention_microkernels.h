// The register-blocked micro-kernels of the fused attention (src/kernels/attention.cpp), FlashAttention-style
// (Dao et al. 2022): per block of queries and block of keys, S = Q K^T, an online softmax (Milakov & Gimelshein
// 2018), then O = diag(c) O + P V. Everything is laid out transposed with queries along the SIMD lanes:
//   qt [D x kQueryBlock]   the query block, Q^T, pre-scaled by 1/sqrt(D)
//   st [n x kQueryBlock]   S^T for n <= kKeyBlock keys, overwritten by P^T
//   ot [D x kQueryBlock]   the unnormalized output O^T
// Only the first `vecs` vectors of each row are live (a tail block of queries has fewer).
#pragma once
#include <cfloat>
#include <cmath>
#include <cstdint>

#include "kernels/vector_math.h"

namespace sdcpu::attention_detail {

using simd::kWidth;
using simd::Vec;

// Register tiles. AVX-512 (32 registers): 6 keys (or 6 head dims) x 4 query vectors = 24 accumulators, plus 4
// query (or P) vectors and one broadcast; each step is 24 FMAs against 10 loads, so the FMA ports bind.
// AVX2 (16 registers): 4 x 3 = 12 accumulators + 3 + 1. Scalar: whatever, it only has to be correct.
#if defined(__AVX512F__)
constexpr int kMaxVecs = 4, kTileKeys = 6, kTileDims = 6;
#elif defined(__AVX2__) && defined(__FMA__)
constexpr int kMaxVecs = 3, kTileKeys = 4, kTileDims = 4;
#else
constexpr int kMaxVecs = 8, kTileKeys = 4, kTileDims = 4;
#endif
constexpr int64_t kQueryBlock = kMaxVecs * kWidth;  // 64 / 24 / 8 queries per task
// Keys per block: S^T is 96 x 64 floats = 24 KiB, half the 48 KiB L1 (with Q^T of D = 40 and O^T beside it);
// 96 is a multiple of the 6-key tile and covers CLIP's 77 tokens (cross-attention) in one block.
constexpr int64_t kKeyBlock = 96;

// st[r][:] = sum_e k[r * ldk + e] * qt[e][:] for NR keys, and tile_max[:] = max(tile_max[:], max_r st[r][:]):
// the softmax's block maximum is taken from the registers, sparing a pass over S whose vmaxps chain is
// latency-bound.
template <int V, int NR>
inline void score_tile(const float* qt, const float* k, int64_t ldk, int64_t d, float* st, float* tile_max) {
  Vec acc[NR][V];
#pragma GCC unroll 8
  for (int r = 0; r < NR; ++r)
#pragma GCC unroll 8
    for (int m = 0; m < V; ++m) acc[r][m] = simd::zero();
  for (int64_t e = 0; e < d; ++e) {
    Vec qv[V];
#pragma GCC unroll 8
    for (int m = 0; m < V; ++m) qv[m] = simd::load(qt + e * kQueryBlock + m * kWidth);
#pragma GCC unroll 8
    for (int r = 0; r < NR; ++r) {
      const Vec kr = simd::set1(k[r * ldk + e]);
#pragma GCC unroll 8
      for (int m = 0; m < V; ++m) acc[r][m] = simd::fmadd(kr, qv[m], acc[r][m]);
    }
  }
#pragma GCC unroll 8
  for (int m = 0; m < V; ++m) {
    Vec mx = simd::load(tile_max + m * kWidth);
#pragma GCC unroll 8
    for (int r = 0; r < NR; ++r) {
      simd::store(st + r * kQueryBlock + m * kWidth, acc[r][m]);
      mx = simd::max(acc[r][m], mx);
    }
    simd::store(tile_max + m * kWidth, mx);
  }
}

// The last n % kTileKeys keys, with a tile of exactly that height.
template <int V, int NR>
inline void score_tail(const float* qt, const float* k, int64_t ldk, int64_t d, int64_t nr, float* st,
                       float* tile_max) {
  if constexpr (NR > 0) {
    if (nr == NR)
      score_tile<V, NR>(qt, k, ldk, d, st, tile_max);
    else
      score_tail<V, NR - 1>(qt, k, ldk, d, nr, st, tile_max);
  }
}

template <int V>
inline void scores_v(const float* qt, const float* k, int64_t ldk, int64_t d, int64_t n, float* st, float* tile_max) {
  for (int m = 0; m < V; ++m) simd::store(tile_max + m * kWidth, simd::set1(-INFINITY));
  int64_t r = 0;
  for (; r + kTileKeys <= n; r += kTileKeys)
    score_tile<V, kTileKeys>(qt, k + r * ldk, ldk, d, st + r * kQueryBlock, tile_max);
  score_tail<V, kTileKeys - 1>(qt, k + r * ldk, ldk, d, n - r, st + r * kQueryBlock, tile_max);
}

// ot[e][:] = ot[e][:] * c[:] + sum_r v[r * ldv + e] * st[r][:] for ND head dims.
template <int V, int ND>
inline void pv_tile(const float* st, int64_t n, const float* v, int64_t ldv, const float* correction, float* ot) {
  Vec acc[ND][V];
#pragma GCC unroll 8
  for (int m = 0; m < V; ++m) {
    const Vec c = simd::load(correction + m * kWidth);
#pragma GCC unroll 8
    for (int e = 0; e < ND; ++e) acc[e][m] = simd::mul(simd::load(ot + e * kQueryBlock + m * kWidth), c);
  }
  for (int64_t r = 0; r < n; ++r) {
    Vec p[V];
#pragma GCC unroll 8
    for (int m = 0; m < V; ++m) p[m] = simd::load(st + r * kQueryBlock + m * kWidth);
#pragma GCC unroll 8
    for (int e = 0; e < ND; ++e) {
      const Vec ve = simd::set1(v[r * ldv + e]);
#pragma GCC unroll 8
      for (int m = 0; m < V; ++m) acc[e][m] = simd::fmadd(ve, p[m], acc[e][m]);
    }
  }
#pragma GCC unroll 8
  for (int e = 0; e < ND; ++e)
#pragma GCC unroll 8
    for (int m = 0; m < V; ++m) simd::store(ot + e * kQueryBlock + m * kWidth, acc[e][m]);
}

template <int V, int ND>
inline void pv_tail(const float* st, int64_t n, const float* v, int64_t ldv, const float* correction, float* ot,
                    int64_t nd) {
  if constexpr (ND > 0) {
    if (nd == ND)
      pv_tile<V, ND>(st, n, v, ldv, correction, ot);
    else
      pv_tail<V, ND - 1>(st, n, v, ldv, correction, ot, nd);
  }
}

template <int V>
inline void accumulate_pv_v(const float* st, int64_t n, const float* v, int64_t ldv, int64_t d, const float* correction,
                            float* ot) {
  int64_t e = 0;
  for (; e + kTileDims <= d; e += kTileDims) pv_tile<V, kTileDims>(st, n, v + e, ldv, correction, ot + e * kQueryBlock);
  pv_tail<V, kTileDims - 1>(st, n, v + e, ldv, correction, ot + e * kQueryBlock, d - e);
}

// Calls f.template operator()<V>() with V = vecs in [1, kMaxVecs] as a compile-time constant.
template <int V = kMaxVecs, typename F>
inline void dispatch_vecs(int vecs, F&& f) {
  if constexpr (V > 1) {
    if (vecs < V) return dispatch_vecs<V - 1>(vecs, f);
  }
  f.template operator()<V>();
}

// S^T [n x vecs*W] = K[0:n] Q^T for keys k (row stride ldk) and the packed query block qt; tile_max gets the
// maximum over the n keys per query.
inline void scores(int vecs, const float* qt, const float* k, int64_t ldk, int64_t d, int64_t n, float* st,
                   float* tile_max) {
  dispatch_vecs(vecs, [&]<int V>() { scores_v<V>(qt, k, ldk, d, n, st, tile_max); });
}

// tile_max = the maximum over S^T's n rows per query, for a block changed after scores() (the causal mask).
// Four chains, since vmaxps has a latency of four cycles.
inline void block_max(int vecs, int64_t n, const float* st, float* tile_max) {
  for (int m = 0; m < vecs; ++m) {
    const float* s = st + m * kWidth;
    Vec mx[4] = {simd::set1(-INFINITY), simd::set1(-INFINITY), simd::set1(-INFINITY), simd::set1(-INFINITY)};
    for (int64_t r = 0; r < n; ++r) mx[r % 4] = simd::max(simd::load(s + r * kQueryBlock), mx[r % 4]);
    simd::store(tile_max + m * kWidth, simd::max(simd::max(mx[0], mx[1]), simd::max(mx[2], mx[3])));
  }
}

// O^T = O^T diag(correction) + V[0:n]^T P^T: the FlashAttention rescale folded into the accumulator load.
inline void accumulate_pv(int vecs, const float* st, int64_t n, const float* v, int64_t ldv, int64_t d,
                          const float* correction, float* ot) {
  dispatch_vecs(vecs, [&]<int V>() { accumulate_pv_v<V>(st, n, v, ldv, d, correction, ot); });
}

// Online softmax over one key block, per query lane (Milakov & Gimelshein 2018): m' = max(m, tile_max),
// P = 2^(S - m') in place, l' = l 2^(m - m') + sum_r P[r], and correction = 2^(m - m') for the accumulators. The
// scores are in log2 units (Q carries log2(e) with its 1/sqrt(D)), so 2^(S - m') = e^(S' - m'') and
// simd::exp2_nonpositive, half the work of exp, gives the same softmax. A lane whose scores are all -inf so far
// (fully masked) keeps m = -inf; it is shifted by -FLT_MAX instead, so that P and correction are 0 rather than NaN
// from -inf - -inf.
inline void online_softmax(int vecs, int64_t n, const float* tile_max, float* st, float* row_max, float* row_sum,
                           float* correction) {
  for (int m = 0; m < vecs; ++m) {
    float* s = st + m * kWidth;
    const Vec old_max = simd::load(row_max + m * kWidth);
    const Vec mx = simd::max(simd::load(tile_max + m * kWidth), old_max);
    simd::store(row_max + m * kWidth, mx);
    const Vec shift = simd::max(mx, simd::set1(-FLT_MAX));
    const Vec c = simd::exp2_nonpositive(simd::sub(old_max, shift));
    // Two partial sums halve the add latency chain.
    Vec sum0 = simd::zero(), sum1 = simd::zero();
    int64_t r = 0;
    for (; r + 2 <= n; r += 2) {
      const Vec p0 = simd::exp2_nonpositive(simd::sub(simd::load(s + r * kQueryBlock), shift));
      const Vec p1 = simd::exp2_nonpositive(simd::sub(simd::load(s + (r + 1) * kQueryBlock), shift));
      simd::store(s + r * kQueryBlock, p0);
      simd::store(s + (r + 1) * kQueryBlock, p1);
      sum0 = simd::add(sum0, p0);
      sum1 = simd::add(sum1, p1);
    }
    if (r < n) {
      const Vec p0 = simd::exp2_nonpositive(simd::sub(simd::load(s + r * kQueryBlock), shift));
      simd::store(s + r * kQueryBlock, p0);
      sum0 = simd::add(sum0, p0);
    }
    simd::store(correction + m * kWidth, c);
    simd::store(row_sum + m * kWidth, simd::fmadd(simd::load(row_sum + m * kWidth), c, simd::add(sum0, sum1)));
  }
}

}  // namespace sdcpu::attention_detail
