#include "kernels/norms.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
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

// y[i] = ((x[i] - mean_hi) - mean_lo) * scale + shift, then SiLU if asked, for i in [0, n). The mean is split
// into two floats (mean_hi + mean_lo = mean to 2^-48 relative): x - mean_hi is exact for x near the mean
// (Sterbenz), so a large mean costs no accuracy, where x * scale + (shift - mean * scale) would round the
// mean's product to the output's ulp at the mean's magnitude (4e-6 of a unit-variance output at mean 100).
template <bool kSilu>
void normalize(const float* x, float* y, int64_t n, float mean_hi, float mean_lo, float scale, float shift) {
  const Vec hi = simd::set1(mean_hi), lo = simd::set1(mean_lo), a = simd::set1(scale), b = simd::set1(shift);
  auto f = [&](Vec v) {
    v = simd::fmadd(simd::sub(simd::sub(v, hi), lo), a, b);
    return kSilu ? simd::silu(v) : v;
  };
  int64_t i = 0;
  for (; i + kWidth <= n; i += kWidth) simd::store(y + i, f(simd::load(x + i)));
  if (i < n) simd::store_partial(y + i, f(simd::load_partial(x + i, static_cast<int>(n - i))), static_cast<int>(n - i));
}

void split(double v, float& hi, float& lo) {
  hi = static_cast<float>(v);
  lo = static_cast<float>(v - hi);
}

}  // namespace

// Each task is one part of one (batch, group) pair: it computes the Moments of its part's kChunk-value chunks,
// then, once every part of its group is done, merges the group's chunk Moments in order (mean and
// 1 / sqrt(var + eps) in double) and normalizes its part, channel by channel (gamma and beta are per channel).
// Usually a group is one part, and a task does all of this at once, on data it just read (from its own cache
// when the group fits, as the UNet's groups of 40-160 KB do), with no barrier in between. A group is split into
// parts only when there are fewer (batch, group) pairs than twice the threads (a batch-1 VAE norm on a large
// machine): then the statistics and the normalization are two parallel loops over the same static schedule, so
// a thread still normalizes what it read. Chunk boundaries are fixed relative to the group and merged in the same
// order either way, so the statistics, and hence the output, do not depend on the thread count.
Tensor group_norm(const Tensor& x, int groups, const Tensor& gamma, const Tensor& beta, float eps, bool silu) {
  if (x.ndim() < 2 || groups <= 0 || x.dim(1) % groups != 0 || gamma.numel() != x.dim(1) || beta.numel() != x.dim(1))
    throw InvalidArgument("group_norm: input " + shape_to_string(x.shape()) + " does not fit " +
                          std::to_string(groups) + " groups / parameters of size " + std::to_string(gamma.numel()));
  const int64_t n = x.dim(0), c = x.dim(1);
  const int64_t spatial = x.numel() / (n * c);
  const int64_t cpg = c / groups, count = cpg * spatial;
  const int64_t pairs = n * groups;
  Tensor y(x.shape());
  if (x.numel() == 0) return y;
  const int64_t chunks = (count + kChunk - 1) / kChunk;
  const int64_t threads = omp_get_max_threads();
  const int64_t parts = std::clamp<int64_t>((2 * threads + pairs - 1) / pairs, 1, chunks);
  const int64_t chunks_per_part = (chunks + parts - 1) / parts;
  std::vector<Moments> chunk_stats(pairs * chunks);
  const float* src = x.data();
  float* dst = y.data();
  const float* g = gamma.data();
  const float* bt = beta.data();

  auto statistics = [&](int64_t pair, int64_t part) {
    const float* base = src + pair * count;
    for (int64_t k = part * chunks_per_part; k < std::min(chunks, (part + 1) * chunks_per_part); ++k)
      chunk_stats[pair * chunks + k] = chunk_moments(base + k * kChunk, std::min(kChunk, count - k * kChunk));
  };
  auto normalize_part = [&](int64_t pair, int64_t part) {
    Moments m;
    for (int64_t k = 0; k < chunks; ++k) merge(m, chunk_stats[pair * chunks + k]);
    // torch.nn.GroupNorm: biased variance, 1 / sqrt(var + eps).
    const double inv_std = 1.0 / std::sqrt(m.m2 / m.count + eps);
    float mean_hi, mean_lo;
    split(m.mean, mean_hi, mean_lo);
    const int64_t begin = std::min(count, part * chunks_per_part * kChunk);
    const int64_t end = std::min(count, (part + 1) * chunks_per_part * kChunk);
    const int64_t ch0 = (pair % groups) * cpg;
    for (int64_t i = begin; i < end;) {
      const int64_t ch = ch0 + i / spatial, stop = std::min(end, (i / spatial + 1) * spatial);
      const float scale = static_cast<float>(inv_std * g[ch]);
      const int64_t at = pair * count + i;
      if (silu)
        normalize<true>(src + at, dst + at, stop - i, mean_hi, mean_lo, scale, bt[ch]);
      else
        normalize<false>(src + at, dst + at, stop - i, mean_hi, mean_lo, scale, bt[ch]);
      i = stop;
    }
  };

  if (parts == 1) {
#pragma omp parallel for schedule(static)
    for (int64_t pair = 0; pair < pairs; ++pair) {
      statistics(pair, 0);
      normalize_part(pair, 0);
    }
  } else {
#pragma omp parallel
    {
#pragma omp for schedule(static)
      for (int64_t task = 0; task < pairs * parts; ++task) statistics(task / parts, task % parts);
#pragma omp for schedule(static)
      for (int64_t task = 0; task < pairs * parts; ++task) normalize_part(task / parts, task % parts);
    }
  }
  return y;
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
