#include "kernels/upsample.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "kernels/vector_math.h"

namespace sdcpu {
namespace {

// ATen's nearest_idx (aten/src/ATen/native/UpSample.h) for scales = None.
int64_t nearest_index(int64_t out_index, int64_t in_size, int64_t out_size) {
  if (out_size == in_size) return out_index;
  if (out_size == 2 * in_size) return out_index >> 1;
  const float scale = static_cast<float>(in_size) / static_cast<float>(out_size);
  return std::min(static_cast<int64_t>(std::floor(static_cast<float>(out_index) * scale)), in_size - 1);
}

void check_upsample(const Tensor& x, int64_t out_h, int64_t out_w) {
  if (x.ndim() != 4 || out_h <= 0 || out_w <= 0 || x.dim(1) <= 0 || x.dim(2) <= 0)
    throw InvalidArgument("upsample_nearest: input " + shape_to_string(x.shape()) + " to " + std::to_string(out_h) +
                          "x" + std::to_string(out_w));
}

void copy_pixel(const float* s, float* d, int64_t c) { std::memcpy(d, s, c * sizeof(float)); }

void copy_pixel(const float* s, uint16_t* d, int64_t c) {
  using simd::kWidth;
  int64_t j = 0;
  for (; j + kWidth <= c; j += kWidth) simd::store_bf16(d + j, simd::load(s + j));
  if (j < c) {
    const int t = static_cast<int>(c - j);
    simd::store_bf16_partial(d + j, simd::load_partial(s + j, t), t);
  }
}

// One output row per iteration: each of its pixels is a copy of the input pixel (row, column) it maps to, C
// contiguous values.
template <typename Out>
void upsample_to(const Tensor& x, int64_t out_h, int64_t out_w, Out* dst) {
  const int64_t n = x.dim(0), h = x.dim(1), w = x.dim(2), c = x.dim(3);
  std::vector<int64_t> rows(out_h), cols(out_w);
  for (int64_t i = 0; i < out_h; ++i) rows[i] = nearest_index(i, h, out_h);
  for (int64_t j = 0; j < out_w; ++j) cols[j] = nearest_index(j, w, out_w);
  const float* src = x.data();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < n * out_h; ++r) {
    const int64_t image = r / out_h, i = r % out_h;
    const float* s = src + ((image * h + rows[i]) * w) * c;
    Out* d = dst + r * out_w * c;
    for (int64_t j = 0; j < out_w; ++j) copy_pixel(s + cols[j] * c, d + j * c, c);
  }
}

}  // namespace

Tensor upsample_nearest(const Tensor& x, int64_t out_h, int64_t out_w) {
  check_upsample(x, out_h, out_w);
  Tensor y({x.dim(0), out_h, out_w, x.dim(3)});
  if (y.numel() > 0) upsample_to(x, out_h, out_w, y.data());
  return y;
}

Tensor upsample_nearest_2x(const Tensor& x) {
  if (x.ndim() != 4) throw InvalidArgument("upsample_nearest_2x: expected 4 dimensions");
  return upsample_nearest(x, 2 * x.dim(1), 2 * x.dim(2));
}

void upsample_nearest_into(const Tensor& x, int64_t out_h, int64_t out_w, void* out, ComputeType out_type) {
  check_upsample(x, out_h, out_w);
  if (x.numel() == 0) return;
  if (out_type == ComputeType::bf16)
    upsample_to(x, out_h, out_w, static_cast<uint16_t*>(out));
  else
    upsample_to(x, out_h, out_w, static_cast<float*>(out));
}

}  // namespace sdcpu
