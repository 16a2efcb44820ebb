#include "kernels/activations.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "kernels/vector_math.h"

namespace sdcpu {
namespace {

using simd::kWidth;
using simd::Vec;

// 0.5 x (1 + erf(x / sqrt 2)), as torch.nn.GELU(approximate="none") evaluates it in fp32.
inline Vec gelu(Vec x) {
  const Vec e = simd::erf(simd::mul(x, simd::set1(0.70710678118654752f)));
  return simd::mul(simd::mul(simd::set1(0.5f), x), simd::add(simd::set1(1.0f), e));
}

inline Vec quick_gelu(Vec x) {
  return simd::div(x, simd::add(simd::set1(1.0f), simd::exp(simd::mul(x, simd::set1(-1.702f)))));
}

// p[i] = f(p[i]) over the whole tensor: blocks of 16 KB spread over the threads, the vector loop inside a block,
// the last (partial) vector with masked loads and stores.
template <typename F>
void map_in_place(Tensor& x, F f) {
  float* p = x.data();
  const int64_t n = x.numel();
  constexpr int64_t kBlock = 4096;
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < n; b += kBlock) {
    const int64_t end = std::min(n, b + kBlock);
    int64_t i = b;
    for (; i + kWidth <= end; i += kWidth) simd::store(p + i, f(simd::load(p + i)));
    if (i < end) {
      const int t = static_cast<int>(end - i);
      simd::store_partial(p + i, f(simd::load_partial(p + i, t)), t);
    }
  }
}

}  // namespace

void silu_(Tensor& x) {
  map_in_place(x, [](Vec v) { return simd::silu(v); });
}

void gelu_(Tensor& x) {
  map_in_place(x, [](Vec v) { return gelu(v); });
}

void quick_gelu_(Tensor& x) {
  map_in_place(x, [](Vec v) { return quick_gelu(v); });
}

Tensor geglu(const Tensor& x) {
  if (x.ndim() < 1 || x.dim(-1) % 2 != 0) throw InvalidArgument("geglu: last dimension must be even");
  const int64_t d = x.dim(-1) / 2;
  Shape shape = x.shape();
  shape.back() = d;
  Tensor y(shape);
  if (y.numel() == 0) return y;
  const int64_t rows = x.numel() / (2 * d);
  const float* src = x.data();
  float* dst = y.data();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* hidden = src + r * 2 * d;
    const float* gate = hidden + d;
    float* out = dst + r * d;
    int64_t i = 0;
    for (; i + kWidth <= d; i += kWidth)
      simd::store(out + i, simd::mul(simd::load(hidden + i), gelu(simd::load(gate + i))));
    if (i < d) {
      const int t = static_cast<int>(d - i);
      simd::store_partial(out + i, simd::mul(simd::load_partial(hidden + i, t), gelu(simd::load_partial(gate + i, t))),
                          t);
    }
  }
  return y;
}

}  // namespace sdcpu
