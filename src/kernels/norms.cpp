#include "kernels/norms.h"

#include <cmath>

#include "core/error.h"

namespace sdcpu {

Tensor group_norm(const Tensor& x, int groups, const Tensor& gamma, const Tensor& beta, float eps, bool silu) {
  if (x.ndim() < 2 || groups <= 0 || x.dim(1) % groups != 0 || gamma.numel() != x.dim(1) || beta.numel() != x.dim(1))
    throw InvalidArgument("group_norm: input " + shape_to_string(x.shape()) + " does not fit " +
                          std::to_string(groups) + " groups / parameters of size " + std::to_string(gamma.numel()));
  const int64_t n = x.dim(0), c = x.dim(1);
  const int64_t spatial = x.numel() / (n * c);
  const int64_t cpg = c / groups;
  Tensor y(x.shape());
  const float* src = x.data();
  float* dst = y.data();
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < n; ++b) {
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t offset = (b * c + g * cpg) * spatial;
      const int64_t count = cpg * spatial;
      double sum = 0, sum_sq = 0;
      for (int64_t i = 0; i < count; ++i) sum += src[offset + i];
      const double mean = sum / count;
      for (int64_t i = 0; i < count; ++i) {
        const double d = src[offset + i] - mean;
        sum_sq += d * d;
      }
      const double inv_std = 1.0 / std::sqrt(sum_sq / count + eps);
      for (int64_t ch = g * cpg; ch < (g + 1) * cpg; ++ch) {
        const float scale = static_cast<float>(inv_std * gamma[ch]);
        const float shift = static_cast<float>(beta[ch] - mean * inv_std * gamma[ch]);
        const float* s = src + (b * c + ch) * spatial;
        float* d = dst + (b * c + ch) * spatial;
        if (silu) {
          for (int64_t i = 0; i < spatial; ++i) {
            const float v = s[i] * scale + shift;
            d[i] = v / (1.0f + std::exp(-v));
          }
        } else {
          for (int64_t i = 0; i < spatial; ++i) d[i] = s[i] * scale + shift;
        }
      }
    }
  }
  return y;
}

Tensor layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps) {
  if (x.ndim() < 1 || gamma.numel() != x.dim(-1) || beta.numel() != x.dim(-1))
    throw InvalidArgument("layer_norm: input " + shape_to_string(x.shape()) + " does not fit parameters of size " +
                          std::to_string(gamma.numel()));
  const int64_t c = x.dim(-1), rows = x.numel() / c;
  Tensor y(x.shape());
  const float* src = x.data();
  float* dst = y.data();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* s = src + r * c;
    float* d = dst + r * c;
    double sum = 0, sum_sq = 0;
    for (int64_t i = 0; i < c; ++i) sum += s[i];
    const double mean = sum / c;
    for (int64_t i = 0; i < c; ++i) sum_sq += (s[i] - mean) * (s[i] - mean);
    const float inv_std = static_cast<float>(1.0 / std::sqrt(sum_sq / c + eps));
    const float m = static_cast<float>(mean);
    for (int64_t i = 0; i < c; ++i) d[i] = (s[i] - m) * inv_std * gamma[i] + beta[i];
  }
  return y;
}

}  // namespace sdcpu
