// upsample_nearest against a scalar reference written from PyTorch's definition of mode="nearest".
#include <gtest/gtest.h>

#include <cmath>

#include "core/error.h"
#include "kernels/tensor_ops.h"
#include "kernels/upsample.h"
#include "test_support.h"

namespace sdcpu {
namespace {

Tensor iota(Shape shape) {
  Tensor t(std::move(shape));
  for (int64_t i = 0; i < t.numel(); ++i) t[i] = static_cast<float>(i);
  return t;
}

// out[n, c, i, j] = x[n, c, floor(i * H / oh), floor(j * W / ow)] (exact rational arithmetic, clamped).
Tensor upsample_reference(const Tensor& x, int64_t oh, int64_t ow) {
  const int64_t planes = x.dim(0) * x.dim(1), h = x.dim(2), w = x.dim(3);
  Tensor y({x.dim(0), x.dim(1), oh, ow});
  for (int64_t p = 0; p < planes; ++p)
    for (int64_t i = 0; i < oh; ++i)
      for (int64_t j = 0; j < ow; ++j) {
        const int64_t si = std::min(i * h / oh, h - 1), sj = std::min(j * w / ow, w - 1);
        y[(p * oh + i) * ow + j] = x[(p * h + si) * w + sj];
      }
  return y;
}

TEST(KernelsUpsample, TwiceEqualsUpsampleNearest2x) {
  Tensor x = iota({2, 3, 5, 7});
  EXPECT_TENSOR_NEAR(upsample_nearest(x, 10, 14), upsample_nearest_2x(x), 0.0);
}

TEST(KernelsUpsample, ToSkipSizesOfOddLatents) {
  // The sizes a UNet meets on a 13x17 latent: 2 -> 4, 4 -> 7, 7 -> 13 (and 3 -> 5, 5 -> 9, 9 -> 17), plus
  // identity and a downscale.
  Tensor x = iota({1, 2, 7, 9});
  for (auto [oh, ow] : {std::pair<int64_t, int64_t>{13, 17}, {14, 18}, {7, 9}, {4, 5}, {1, 1}, {20, 30}})
    EXPECT_TENSOR_NEAR(upsample_nearest(x, oh, ow), upsample_reference(x, oh, ow), 0.0);
}

TEST(KernelsUpsample, RejectsBadSizes) {
  EXPECT_THROW(upsample_nearest(iota({1, 1, 2, 2}), 0, 4), InvalidArgument);
  EXPECT_THROW(upsample_nearest(iota({1, 2, 2}), 4, 4), InvalidArgument);
}

}  // namespace
}  // namespace sdcpu
