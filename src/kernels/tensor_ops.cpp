#include "kernels/tensor_ops.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"

namespace sdcpu {

Tensor add(const Tensor& a, const Tensor& b) {
  Tensor y = a.clone();
  add_(y, b);
  return y;
}

void add_(Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape())
    throw InvalidArgument("add: shapes " + shape_to_string(a.shape()) + " and " + shape_to_string(b.shape()));
  float* pa = a.data();
  const float* pb = b.data();
  const int64_t n = a.numel();
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) pa[i] += pb[i];
}

void scale_(Tensor& x, float s) {
  float* p = x.data();
  const int64_t n = x.numel();
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) p[i] *= s;
}

void add_channel_bias_(Tensor& x, const Tensor& v) {
  if (x.ndim() < 2 || v.numel() != x.dim(0) * x.dim(-1))
    throw InvalidArgument("add_channel_bias: " + shape_to_string(x.shape()) + " and " + shape_to_string(v.shape()));
  if (x.numel() == 0) return;
  const int64_t n = x.dim(0), c = x.dim(-1), pixels = x.numel() / (n * c);
  float* p = x.data();
  const float* pv = v.data();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < n * pixels; ++r) {
    const float* bias = pv + (r / pixels) * c;
    float* row = p + r * c;
#pragma omp simd
    for (int64_t j = 0; j < c; ++j) row[j] += bias[j];
  }
}

Tensor concat_channels(const Tensor& a, const Tensor& b) {
  if (a.ndim() < 2 || a.ndim() != b.ndim() || !std::equal(a.shape().begin(), a.shape().end() - 1, b.shape().begin()))
    throw InvalidArgument("concat_channels: " + shape_to_string(a.shape()) + " and " + shape_to_string(b.shape()));
  Shape shape = a.shape();
  shape.back() += b.dim(-1);
  Tensor y(shape);
  const int64_t ca = a.dim(-1), cb = b.dim(-1), pixels = ca + cb == 0 ? 0 : y.numel() / (ca + cb);
  const float* pa = a.data();
  const float* pb = b.data();
  float* py = y.data();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < pixels; ++r) {
    std::memcpy(py + r * (ca + cb), pa + r * ca, ca * sizeof(float));
    std::memcpy(py + r * (ca + cb) + ca, pb + r * cb, cb * sizeof(float));
  }
  return y;
}

}  // namespace sdcpu
