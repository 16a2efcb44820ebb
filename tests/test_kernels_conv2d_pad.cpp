// conv2d with separate padding per side (diffusers' Downsample2D pads (0, 1, 0, 1) before a stride-2 conv
// with padding 0 in the VAE encoder) against a scalar reference that pads a copy first, as F.pad does.
#include <gtest/gtest.h>

#include <random>
#include <tuple>

#include "core/error.h"
#include "kernels/conv2d.h"
#include "random_tensor.h"
#include "test_support.h"

namespace sdcpu {
namespace {

using testing::random_tensor;

// F.pad(x, (left, right, top, bottom)) with zeros, then an unpadded convolution, in double.
Tensor padded_conv_reference(const Tensor& x, const Tensor& w, const Tensor& b, int stride, int top, int left,
                             int bottom, int right) {
  const int64_t n = x.dim(0), c = x.dim(1), h = x.dim(2), wd = x.dim(3);
  const int64_t hp = h + top + bottom, wp = wd + left + right;
  Tensor padded = Tensor::zeros({n, c, hp, wp});
  for (int64_t p = 0; p < n * c; ++p)
    for (int64_t i = 0; i < h; ++i)
      for (int64_t j = 0; j < wd; ++j) padded[(p * hp + i + top) * wp + j + left] = x[(p * h + i) * wd + j];
  const int64_t o = w.dim(0), kh = w.dim(2), kw = w.dim(3);
  const int64_t ho = (hp - kh) / stride + 1, wo = (wp - kw) / stride + 1;
  Tensor y({n, o, ho, wo});
  for (int64_t bi = 0; bi < n; ++bi)
    for (int64_t oc = 0; oc < o; ++oc)
      for (int64_t i = 0; i < ho; ++i)
        for (int64_t j = 0; j < wo; ++j) {
          double acc = b.empty() ? 0.0 : b[oc];
          for (int64_t ic = 0; ic < c; ++ic)
            for (int64_t di = 0; di < kh; ++di)
              for (int64_t dj = 0; dj < kw; ++dj)
                acc += static_cast<double>(padded[((bi * c + ic) * hp + i * stride + di) * wp + j * stride + dj]) *
                       w[((oc * c + ic) * kh + di) * kw + dj];
          y[((bi * o + oc) * ho + i) * wo + j] = static_cast<float>(acc);
        }
  return y;
}

TEST(Kernels, Conv2dAsymmetricPaddingMatchesReference) {
  // (stride, top, left, bottom, right): Downsample2D's case on even and odd sizes, and arbitrary mixes.
  for (auto [stride, t, l, b, r] : {std::tuple{2, 0, 0, 1, 1}, {1, 0, 0, 1, 1}, {2, 1, 0, 2, 1}, {1, 2, 1, 0, 0}}) {
    for (Shape xs : {Shape{2, 5, 8, 8}, Shape{1, 3, 9, 7}}) {
      Tensor x = random_tensor(xs, 1), w = random_tensor({6, xs[1], 3, 3}, 2), bias = random_tensor({6}, 3);
      EXPECT_TENSOR_NEAR(conv2d(x, w, bias, stride, t, l, b, r), padded_conv_reference(x, w, bias, stride, t, l, b, r),
                         1e-5);
      EXPECT_TENSOR_NEAR(conv2d(x, w, Tensor(), stride, t, l, b, r),
                         padded_conv_reference(x, w, Tensor(), stride, t, l, b, r), 1e-5);
    }
  }
}

TEST(Kernels, Conv2dAsymmetricPaddingShapes) {
  Tensor x = random_tensor({1, 2, 8, 8}, 4), w = random_tensor({3, 2, 3, 3}, 5);
  // The VAE encoder's downsampler: 8 -> 4.
  EXPECT_EQ(conv2d(x, w, Tensor(), 2, 0, 0, 1, 1).shape(), (Shape{1, 3, 4, 4}));
  // Symmetric overload agrees with the general one.
  EXPECT_TENSOR_NEAR(conv2d(x, w, Tensor(), 1, 1), conv2d(x, w, Tensor(), 1, 1, 1, 1, 1), 0);
  // Too small even with padding, negative padding: errors, not garbage.
  Tensor tiny = random_tensor({1, 2, 1, 1}, 6);
  EXPECT_THROW(conv2d(tiny, w, Tensor(), 2, 0, 0, 1, 1), InvalidArgument);
  EXPECT_THROW(conv2d(x, w, Tensor(), 1, -1, 0, 0, 0), InvalidArgument);
}

}  // namespace
}  // namespace sdcpu
