// upsample_nearest (channels-last [N, H, W, C]) against a scalar reference written from PyTorch's definition of
// mode="nearest".
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "core/error.h"
#include "kernels/upsample.h"
#include "kernels/vector_math.h"
#include "test_support.h"

namespace sdcpu {
namespace {

Tensor iota(Shape shape) {
  Tensor t(std::move(shape));
  for (int64_t i = 0; i < t.numel(); ++i) t[i] = static_cast<float>(i);
  return t;
}

// out[n, i, j, c] = x[n, floor(i * H / oh), floor(j * W / ow), c] (exact rational arithmetic, clamped).
Tensor upsample_reference(const Tensor& x, int64_t oh, int64_t ow) {
  const int64_t n = x.dim(0), h = x.dim(1), w = x.dim(2), c = x.dim(3);
  Tensor y({n, oh, ow, c});
  for (int64_t b = 0; b < n; ++b)
    for (int64_t i = 0; i < oh; ++i)
      for (int64_t j = 0; j < ow; ++j) {
        const int64_t si = std::min(i * h / oh, h - 1), sj = std::min(j * w / ow, w - 1);
        for (int64_t ch = 0; ch < c; ++ch) y[((b * oh + i) * ow + j) * c + ch] = x[((b * h + si) * w + sj) * c + ch];
      }
  return y;
}

TEST(KernelsUpsample, TwiceEqualsUpsampleNearest2x) {
  Tensor x = iota({2, 5, 7, 3});
  EXPECT_TENSOR_NEAR(upsample_nearest(x, 10, 14), upsample_nearest_2x(x), 0.0);
  EXPECT_TENSOR_NEAR(upsample_nearest_2x(x), upsample_reference(x, 10, 14), 0.0);
}

TEST(KernelsUpsample, ToSkipSizesOfOddLatents) {
  // The sizes a UNet meets on a 13x17 latent: 2 -> 4, 4 -> 7, 7 -> 13 (and 3 -> 5, 5 -> 9, 9 -> 17), plus
  // identity and a downscale.
  Tensor x = iota({1, 7, 9, 2});
  for (auto [oh, ow] : {std::pair<int64_t, int64_t>{13, 17}, {14, 18}, {7, 9}, {4, 5}, {1, 1}, {20, 30}})
    EXPECT_TENSOR_NEAR(upsample_nearest(x, oh, ow), upsample_reference(x, oh, ow), 0.0);
}

// What the convolution after an Upsample2D reads: the same values, fp32 or rounded to bf16, with 19 channels
// (vector tails).
TEST(KernelsUpsample, IntoWritesTheSameValues) {
  Tensor x = iota({2, 3, 5, 19});
  for (int64_t i = 0; i < x.numel(); ++i) x[i] = x[i] * 1.001f - 50.0f;
  const Tensor y = upsample_nearest(x, 7, 9);
  std::vector<float> f32(y.numel());
  upsample_nearest_into(x, 7, 9, f32.data(), ComputeType::f32);
  EXPECT_EQ(f32, y.to_vector());
  std::vector<uint16_t> bf16(y.numel());
  upsample_nearest_into(x, 7, 9, bf16.data(), ComputeType::bf16);
  for (int64_t i = 0; i < y.numel(); ++i) ASSERT_EQ(bf16[i], simd::to_bf16(y[i])) << i;
}

TEST(KernelsUpsample, RejectsBadSizes) {
  EXPECT_THROW(upsample_nearest(iota({1, 2, 2, 1}), 0, 4), InvalidArgument);
  EXPECT_THROW(upsample_nearest(iota({1, 2, 2}), 4, 4), InvalidArgument);
}

}  // namespace
}  // namespace sdcpu
