#include "kernels/upsample.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"

namespace sdcpu {
namespace {

// ATen's nearest_idx (aten/src/ATen/native/UpSample.h) for scales = None.
int64_t nearest_index(int64_t out_index, int64_t in_size, int64_t out_size) {
  if (out_size == in_size) return out_index;
  if (out_size == 2 * in_size) return out_index >> 1;
  const float scale = static_cast<float>(in_size) / static_cast<float>(out_size);
  return std::min(static_cast<int64_t>(std::floor(static_cast<float>(out_index) * scale)), in_size - 1);
}

}  // namespace

Tensor upsample_nearest(const Tensor& x, int64_t out_h, int64_t out_w) {
  if (x.ndim() != 4 || out_h <= 0 || out_w <= 0 || x.dim(2) <= 0 || x.dim(3) <= 0)
    throw InvalidArgument("upsample_nearest: input " + shape_to_string(x.shape()) + " to " + std::to_string(out_h) +
                          "x" + std::to_string(out_w));
  const int64_t planes = x.dim(0) * x.dim(1), h = x.dim(2), w = x.dim(3);
  std::vector<int64_t> rows(out_h), cols(out_w);
  for (int64_t i = 0; i < out_h; ++i) rows[i] = nearest_index(i, h, out_h);
  for (int64_t j = 0; j < out_w; ++j) cols[j] = nearest_index(j, w, out_w);
  Tensor y({x.dim(0), x.dim(1), out_h, out_w});
  const float* src = x.data();
  float* dst = y.data();
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < planes; ++p)
    for (int64_t i = 0; i < out_h; ++i) {
      const float* s = src + (p * h + rows[i]) * w;
      float* d = dst + (p * out_h + i) * out_w;
      for (int64_t j = 0; j < out_w; ++j) d[j] = s[cols[j]];
    }
  return y;
}

}  // namespace sdcpu
