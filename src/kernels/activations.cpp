#include "kernels/activations.h"

#include <cmath>

#include "core/error.h"

namespace sdcpu {
namespace {

inline float gelu(float v) { return 0.5f * v * (1.0f + std::erf(v * 0.70710678118654752f)); }

}  // namespace

void silu_(Tensor& x) {
  float* p = x.data();
  const int64_t n = x.numel();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) p[i] = p[i] / (1.0f + std::exp(-p[i]));
}

void gelu_(Tensor& x) {
  float* p = x.data();
  const int64_t n = x.numel();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) p[i] = gelu(p[i]);
}

void quick_gelu_(Tensor& x) {
  float* p = x.data();
  const int64_t n = x.numel();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) p[i] = p[i] / (1.0f + std::exp(-1.702f * p[i]));
}

Tensor geglu(const Tensor& x) {
  if (x.ndim() < 1 || x.dim(-1) % 2 != 0) throw InvalidArgument("geglu: last dimension must be even");
  const int64_t d = x.dim(-1) / 2, rows = x.numel() / (2 * d);
  Shape shape = x.shape();
  shape.back() = d;
  Tensor y(shape);
  const float* src = x.data();
  float* dst = y.data();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* hidden = src + r * 2 * d;
    const float* gate = hidden + d;
    for (int64_t i = 0; i < d; ++i) dst[r * d + i] = hidden[i] * gelu(gate[i]);
  }
  return y;
}

}  // namespace sdcpu
