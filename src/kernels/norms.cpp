#include "kernels/norms.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "core/error.h"
#include "kernels/vector_math.h"

namespace sdcpu {
namespace {

using simd::kWidth;
using simd::Vec;

// Count, mean and sum of squared deviations from the mean of some values (Chan, Golub & LeVeque, "Updating
// formulae and a pairwise algorithm for computing sample variances", 1979): two sets combine exactly, so a long
// range is summarized chunk by chunk and the chunks merged in double.
struct Moments {
  double count = 0, mean = 0, m2 = 0;
};

void merge(Moments& a, const Moments& b) {
  const double count = a.count + b.count;
  if (count == 0) return;
  const double delta = b.mean - a.mean, weight = b.count / count;
  a.mean += delta * weight;
  a.m2 += b.m2 + delta * delta * a.count * weight;
  a.count = count;
}

// The values a chunk's statistics are computed over in one go: 8 KB, so the chunk's second pass reads L1.
constexpr int64_t kChunk = 2048;

// Moments of p[0, n), n <= kChunk, in fp32 SIMD arithmetic that stays accurate whatever the mean: a first pass
// gives an approximate mean m; the second sums d = x - m and d^2, which are of the order of the spread, not of
// the mean, so the fp32 sums lose nothing to cancellation (a mean of 100 with a spread of 1 is as exact as a
// mean of 0). mean = m + sum(d) / n and M2 = sum(d^2) - sum(d)^2 / n (the shifted-data formula, exact for any
// shift) are then formed in double. Four accumulators per pass, each summing at most kChunk / (4 kWidth) terms.
Moments chunk_moments(const float* p, int64_t n) {
  Vec s0 = simd::zero(), s1 = simd::zero(), s2 = simd::zero(), s3 = simd::zero();
  int64_t i = 0;
  for (; i + 4 * kWidth <= n; i += 4 * kWidth) {
    s0 = simd::add(s0, simd::load(p + i));
    s1 = simd::add(s1, simd::load(p + i + kWidth));
    s2 = simd::add(s2, simd::load(p + i + 2 * kWidth));
    s3 = simd::add(s3, simd::load(p + i + 3 * kWidth));
  }
  for (; i + kWidth <= n; i += kWidth) s0 = simd::add(s0, simd::load(p + i));
  float tail = 0;
  for (; i < n; ++i) tail += p[i];
  const float m = (simd::reduce_add(simd::add(simd::add(s0, s1), simd::add(s2, s3))) + tail) / static_cast<float>(n);

  const Vec vm = simd::set1(m);
  Vec d0 = simd::zero(), d1 = simd::zero(), q0 = simd::zero(), q1 = simd::zero();
  i = 0;
  for (; i + 2 * kWidth <= n; i += 2 * kWidth) {
    const Vec a = simd::sub(simd::load(p + i), vm), b = simd::sub(simd::load(p + i + kWidth), vm);
    d0 = simd::add(d0, a);
    d1 = simd::add(d1, b);
    q0 = simd::fmadd(a, a, q0);
    q1 = simd::fmadd(b, b, q1);
  }
  float dt = 0, qt = 0;
  for (; i < n; ++i) {
    const float d = p[i] - m;
    dt += d;
    qt += d * d;
  }
  const double sum_d = static_cast<double>(simd::reduce_add(simd::add(d0, d1))) + dt;
  const double sum_q = static_cast<double>(simd::reduce_add(simd::add(q0, q1))) + qt;
  const double count = static_cast<double>(n);
  return {count, m + sum_d / count, std::max(0.0, sum_q - sum_d * sum_d / count)};
}

void split(double v, float& hi, float& lo) {
  hi = static_cast<float>(v);
  lo = static_cast<float>(v - hi);
}

// A group norm's statistics are gathered over chunks of whole pixels, about 16K values (64 KB, so the second
// pass of a chunk reads L2): its pixels' channels are contiguous, so the sums run along the channels in SIMD
// lanes, one accumulator per channel, and are combined into groups afterwards.
constexpr int64_t kNormChunkValues = 16384;

// The Moments of each channel group over `rows` pixels of `c` channels (row stride c) into out[0, groups). The
// same two passes as chunk_moments, per channel: the group's approximate mean m from the first, then sums of
// d = x - m and d^2 per channel, combined per group in double. `work` holds 3 c floats.
void chunk_group_moments(const float* p, int64_t rows, int64_t c, int64_t groups, float* work, Moments* out) {
  const int64_t cpg = c / groups;
  float* sum = work;
  float* dev = work + c;
  float* sq = work + 2 * c;
  for (int64_t j = 0; j < c; j += kWidth) {
    const int t = static_cast<int>(std::min<int64_t>(kWidth, c - j));
    Vec s0 = simd::zero(), s1 = simd::zero();
    int64_t r = 0;
    for (; r + 1 < rows; r += 2) {
      s0 = simd::add(s0, simd::load_partial(p + r * c + j, t));
      s1 = simd::add(s1, simd::load_partial(p + (r + 1) * c + j, t));
    }
    if (r < rows) s0 = simd::add(s0, simd::load_partial(p + r * c + j, t));
    simd::store_partial(sum + j, simd::add(s0, s1), t);
  }
  // The shift: each channel's group's approximate mean, written over the channel sums.
  for (int64_t g = 0; g < groups; ++g) {
    float s = 0;
    for (int64_t k = 0; k < cpg; ++k) s += sum[g * cpg + k];
    const float m = s / static_cast<float>(rows * cpg);
    for (int64_t k = 0; k < cpg; ++k) sum[g * cpg + k] = m;
  }
  for (int64_t j = 0; j < c; j += kWidth) {
    const int t = static_cast<int>(std::min<int64_t>(kWidth, c - j));
    const Vec m = simd::load_partial(sum + j, t);
    Vec d = simd::zero(), q = simd::zero();
    for (int64_t r = 0; r < rows; ++r) {
      const Vec v = simd::sub(simd::load_partial(p + r * c + j, t), m);
      d = simd::add(d, v);
      q = simd::fmadd(v, v, q);
    }
    simd::store_partial(dev + j, d, t);
    simd::store_partial(sq + j, q, t);
  }
  const double count = static_cast<double>(rows * cpg);
  for (int64_t g = 0; g < groups; ++g) {
    double sum_d = 0, sum_q = 0;
    for (int64_t k = 0; k < cpg; ++k) {
      sum_d += dev[g * cpg + k];
      sum_q += sq[g * cpg + k];
    }
    out[g] = {count, sum[g * cpg] + sum_d / count, std::max(0.0, sum_q - sum_d * sum_d / count)};
  }
}

// One pixel: y[j] = ((x[j] - mean_hi[j]) - mean_lo[j]) * scale[j] + shift[j], then SiLU if asked, stored as fp32
// or rounded to bf16. The mean is split into two floats (mean_hi + mean_lo = mean to 2^-48 relative): x - mean_hi
// is exact for x near the mean (Sterbenz), so a large mean costs no accuracy, where x * scale + (shift - mean *
// scale) would round the mean's product to the output's ulp at the mean's magnitude (4e-6 of a unit-variance
// output at mean 100).
template <bool kSilu, typename Out>
void normalize_pixel(const float* x, Out* y, int64_t c, const float* mean_hi, const float* mean_lo, const float* scale,
                     const float* shift) {
  for (int64_t j = 0; j < c; j += kWidth) {
    const int t = static_cast<int>(std::min<int64_t>(kWidth, c - j));
    Vec v = simd::sub(simd::sub(simd::load_partial(x + j, t), simd::load_partial(mean_hi + j, t)),
                      simd::load_partial(mean_lo + j, t));
    v = simd::fmadd(v, simd::load_partial(scale + j, t), simd::load_partial(shift + j, t));
    if (kSilu) v = simd::silu(v);
    if constexpr (std::is_same_v<Out, float>) {
      if (t == kWidth)
        simd::store(y + j, v);
      else
        simd::store_partial(y + j, v, t);
    } else {
      if (t == kWidth)
        simd::store_bf16(y + j, v);
      else
        simd::store_bf16_partial(y + j, v, t);
    }
  }
}

template <typename Out>
void group_norm_to(const Tensor& x, int groups, const Tensor& gamma, const Tensor& beta, float eps, bool silu,
                   Out* dst) {
  const int64_t c = x.dim(-1), n = x.dim(0), pixels = x.numel() / (n * c);
  const int64_t rows_per_chunk = std::max<int64_t>(1, kNormChunkValues / c);
  const int64_t chunks = (pixels + rows_per_chunk - 1) / rows_per_chunk;
  std::vector<Moments> chunk_stats(n * chunks * groups);
  const float* src = x.data();
  // Per image, per channel: the group's mean split in two, 1 / std * gamma, beta.
  std::vector<float> mean_hi(n * c), mean_lo(n * c), scale(n * c);
  const int64_t cpg = c / groups;
#pragma omp parallel
  {
    std::vector<float> work(3 * c);
#pragma omp for schedule(static)
    for (int64_t task = 0; task < n * chunks; ++task) {
      const int64_t image = task / chunks, k = task % chunks;
      const int64_t rows = std::min(rows_per_chunk, pixels - k * rows_per_chunk);
      chunk_group_moments(src + (image * pixels + k * rows_per_chunk) * c, rows, c, groups, work.data(),
                          &chunk_stats[task * groups]);
    }
#pragma omp for schedule(static)
    for (int64_t pair = 0; pair < n * groups; ++pair) {
      const int64_t image = pair / groups, g = pair % groups;
      Moments m;
      for (int64_t k = 0; k < chunks; ++k) merge(m, chunk_stats[(image * chunks + k) * groups + g]);
      // torch.nn.GroupNorm: biased variance, 1 / sqrt(var + eps).
      const double inv_std = 1.0 / std::sqrt(m.m2 / m.count + eps);
      float hi, lo;
      split(m.mean, hi, lo);
      for (int64_t j = g * cpg; j < (g + 1) * cpg; ++j) {
        mean_hi[image * c + j] = hi;
        mean_lo[image * c + j] = lo;
        scale[image * c + j] = static_cast<float>(inv_std * gamma[j]);
      }
    }
#pragma omp for schedule(static)
    for (int64_t row = 0; row < n * pixels; ++row) {
      const int64_t at = (row / pixels) * c;
      if (silu)
        normalize_pixel<true>(src + row * c, dst + row * c, c, &mean_hi[at], &mean_lo[at], &scale[at], beta.data());
      else
        normalize_pixel<false>(src + row * c, dst + row * c, c, &mean_hi[at], &mean_lo[at], &scale[at], beta.data());
    }
  }
}

void check_group_norm(const Tensor& x, int groups, const Tensor& gamma, const Tensor& beta) {
  if (x.ndim() < 2 || groups <= 0 || x.dim(-1) % groups != 0 || gamma.numel() != x.dim(-1) || beta.numel() != x.dim(-1))
    throw InvalidArgument("group_norm: input " + shape_to_string(x.shape()) + " does not fit " +
                          std::to_string(groups) + " groups / parameters of size " + std::to_string(gamma.numel()));
}

}  // namespace

// Three parallel loops: the statistics of every chunk (in fixed chunk boundaries), their merge per (image, group)
// in chunk order, the normalization pixel by pixel. Neither the chunks nor the merge order depend on the thread
// count, so neither does the result.
Tensor group_norm(const Tensor& x, int groups, const Tensor& gamma, const Tensor& beta, float eps, bool silu) {
  check_group_norm(x, groups, gamma, beta);
  Tensor y(x.shape());
  if (x.numel() > 0) group_norm_to(x, groups, gamma, beta, eps, silu, y.data());
  return y;
}

void group_norm_into(const Tensor& x, int groups, const Tensor& gamma, const Tensor& beta, float eps, bool silu,
                     void* out, ComputeType out_type) {
  check_group_norm(x, groups, gamma, beta);
  if (x.numel() == 0) return;
  if (out_type == ComputeType::bf16)
    group_norm_to(x, groups, gamma, beta, eps, silu, static_cast<uint16_t*>(out));
  else
    group_norm_to(x, groups, gamma, beta, eps, silu, static_cast<float*>(out));
}

// One row per iteration: a row of C <= 2048 values is one chunk (two passes, the second from L1), longer rows
// are merged chunk by chunk. torch.nn.LayerNorm: biased variance; y = (x - mean) / sqrt(var + eps) * gamma + beta.
Tensor layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps) {
  if (x.ndim() < 1 || gamma.numel() != x.dim(-1) || beta.numel() != x.dim(-1))
    throw InvalidArgument("layer_norm: input " + shape_to_string(x.shape()) + " does not fit parameters of size " +
                          std::to_string(gamma.numel()));
  const int64_t c = x.dim(-1);
  Tensor y(x.shape());
  if (x.numel() == 0) return y;
  const int64_t rows = x.numel() / c;
  const float* src = x.data();
  float* dst = y.data();
  const float* g = gamma.data();
  const float* bt = beta.data();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* s = src + r * c;
    float* d = dst + r * c;
    Moments m;
    for (int64_t k = 0; k < c; k += kChunk) merge(m, chunk_moments(s + k, std::min(kChunk, c - k)));
    float hi_f, lo_f;
    split(m.mean, hi_f, lo_f);
    const Vec hi = simd::set1(hi_f), lo = simd::set1(lo_f);
    const Vec inv_std = simd::set1(static_cast<float>(1.0 / std::sqrt(m.m2 / m.count + eps)));
    auto f = [&](Vec v, Vec gv, Vec bv) {
      return simd::fmadd(simd::mul(simd::sub(simd::sub(v, hi), lo), inv_std), gv, bv);
    };
    int64_t i = 0;
    for (; i + kWidth <= c; i += kWidth)
      simd::store(d + i, f(simd::load(s + i), simd::load(g + i), simd::load(bt + i)));
    if (i < c) {
      const int t = static_cast<int>(c - i);
      simd::store_partial(
          d + i, f(simd::load_partial(s + i, t), simd::load_partial(g + i, t), simd::load_partial(bt + i, t)), t);
    }
  }
  return y;
}

}  // namespace sdcpu
