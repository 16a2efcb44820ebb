// ComputeType::int8 in PreparedLinear and PreparedConv2d against a scalar reference on the same quantized operands
// (kernels/quantize.h: weights per output channel, the input per tensor, round to nearest even): the int32 sums
// are exact, so the two differ only by fp32 rounding of the scaling (1e-5 of the output's scale). Against the
// unquantized fp32 product the error must stay inside the rounding bound: each operand is off by at most half
// its step, so |y - y_fp32| <= sum_k (|x_k| dw/2 + |w_k| dx/2 + dx dw / 4).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <tuple>
#include <vector>

#include "kernels/conv2d.h"
#include "kernels/cpu_features.h"
#include "kernels/linear.h"
#include "kernels/quantize.h"
#include "random_tensor.h"
#include "test_support.h"

namespace sdcpu {
namespace {

using testing::random_tensor;

// q = round(x / scale), ties to even, in [-127, 127] (the scales make |x / scale| <= 127), computed as the
// reorders do: x times the scale's reciprocal in fp32.
float quantized(float x, float scale) { return std::nearbyint(x * (1.0f / scale)); }

// The fp32 values an int8 product sees: the input quantized per tensor, the weight per output channel (rows of
// w viewed as [O, rest]).
struct Quantized {
  Tensor x, w;  // q * scale, as fp32
  float x_step;
  std::vector<float> w_steps;
};
Quantized quantize_operands(const Tensor& x, const Tensor& w) {
  Quantized q{x.clone(), w.clone(), int8_scale(max_abs(x.data(), x.numel())), {}};
  for (int64_t i = 0; i < x.numel(); ++i) q.x[i] = quantized(x[i], q.x_step) * q.x_step;
  const int64_t rows = w.dim(0), cols = w.numel() / rows;
  q.w_steps = int8_row_scales(w.data(), rows, cols);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) q.w[r * cols + c] = quantized(w[r * cols + c], q.w_steps[r]) * q.w_steps[r];
  return q;
}

Tensor linear_reference(const Tensor& x, const Tensor& w, const Tensor& b) {
  const int64_t k = w.dim(1), n = w.dim(0), m = x.numel() / k;
  Shape shape = x.shape();
  shape.back() = n;
  Tensor y(shape);
  for (int64_t r = 0; r < m; ++r)
    for (int64_t o = 0; o < n; ++o) {
      double acc = b.empty() ? 0.0 : b[o];
      for (int64_t i = 0; i < k; ++i) acc += static_cast<double>(x[r * k + i]) * w[o * k + i];
      y[r * n + o] = static_cast<float>(acc);
    }
  return y;
}

// The rounding bound above, per output element of a linear layer.
Tensor linear_bound(const Tensor& x, const Tensor& w, const Quantized& q) {
  const int64_t k = w.dim(1), n = w.dim(0), m = x.numel() / k;
  Tensor bound({m, n});
  for (int64_t r = 0; r < m; ++r)
    for (int64_t o = 0; o < n; ++o) {
      double e = 0.0;
      for (int64_t i = 0; i < k; ++i)
        e += std::fabs(x[r * k + i]) * q.w_steps[o] / 2 + std::fabs(w[o * k + i]) * q.x_step / 2 +
             q.x_step * q.w_steps[o] / 4;
      bound[r * n + o] = static_cast<float>(e);
    }
  return bound;
}

class Int8Kernels : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!cpu_has_native_int8()) GTEST_SKIP() << "no AVX512-VNNI / AVX-VNNI / AMX-INT8 on this CPU";
  }
};

TEST(Int8Quantize, ScalesAndMaxAbs) {
  const std::vector<float> x = {0.5f, -3.0f, std::numeric_limits<float>::quiet_NaN(), 2.0f};
  EXPECT_EQ(max_abs(x.data(), 4), 3.0f);
  EXPECT_EQ(max_abs(x.data(), 0), 0.0f);
  EXPECT_EQ(int8_scale(127.0f), 1.0f);
  EXPECT_EQ(int8_scale(0.0f), 1.0f);  // all zeros: any scale is exact
  EXPECT_TRUE(std::isnan(int8_scale(std::numeric_limits<float>::infinity())));
  const std::vector<float> w = {1.0f, -2.0f, 0.0f, 0.0f, 0.5f, 0.25f};
  EXPECT_EQ(int8_row_scales(w.data(), 3, 2), (std::vector<float>{2.0f / 127, 1.0f, 0.5f / 127}));
}

TEST_F(Int8Kernels, LinearMatchesReferenceOnQuantizedOperands) {
  for (auto [k, n] : {std::tuple{17, 11}, {64, 128}, {320, 96}, {768, 320}}) {
    const Tensor w = random_tensor({n, k}, 1), b = random_tensor({n}, 2);
    for (bool with_bias : {true, false}) {
      const Tensor bias = with_bias ? b : Tensor();
      const PreparedLinear layer(w, bias, ComputeType::int8);
      ASSERT_EQ(layer.compute_type(), ComputeType::int8) << k << " -> " << n;
      for (Shape xs : {Shape{1, k}, Shape{2, 77, k}, Shape{300, k}}) {
        SCOPED_TRACE(shape_to_string(xs) + " -> " + std::to_string(n) + (with_bias ? " bias" : ""));
        Tensor x = random_tensor(xs, 3);
        x[0] = 9.0f;  // an outlier sets the input's scale
        const Tensor y = linear(x, layer);
        const Quantized q = quantize_operands(x, w);
        EXPECT_TENSOR_NEAR(y, linear_reference(q.x, q.w, bias), 1e-5);
        const Tensor exact = linear_reference(x, w, bias), bound = linear_bound(x, w, q);
        for (int64_t i = 0; i < y.numel(); ++i)
          ASSERT_LE(std::fabs(y[i] - exact[i]), bound[i] * 1.0001f + 1e-5f) << "element " << i;
        const auto d = testing::compare(y, exact);
        EXPECT_GT(d.max_abs, 1e-4 * d.max_ref) << "the int8 linear did not quantize";
      }
    }
  }
}

// + residual by the sum post-op, in fp32 after the scaling (never quantized); an all-zero input gives the bias.
TEST_F(Int8Kernels, LinearResidualAndZeroInput) {
  const Tensor w = random_tensor({96, 320}, 1), b = random_tensor({96}, 2), x = random_tensor({2, 77, 320}, 3);
  const PreparedLinear layer(w, b, ComputeType::int8);
  const Quantized q = quantize_operands(x, w);
  Tensor expected = linear_reference(q.x, q.w, b);
  const Tensor residual = random_tensor({2, 77, 96}, 4, 100.0f);
  for (int64_t i = 0; i < expected.numel(); ++i) expected[i] += residual[i];
  EXPECT_TENSOR_NEAR(linear(x, layer, residual), expected, 1e-6);
  const Tensor y0 = linear(Tensor::zeros({3, 320}), layer);
  for (int64_t r = 0; r < 3; ++r)
    for (int64_t o = 0; o < 96; ++o) EXPECT_FLOAT_EQ(y0[r * 96 + o], b[o]);
}

Tensor conv_reference(const Tensor& x, const Tensor& w, const Tensor& b, int stride, int pad) {
  const int64_t n = x.dim(0), c = x.dim(1), h = x.dim(2), wd = x.dim(3), o = w.dim(0), k = w.dim(2);
  const int64_t ho = (h + 2 * pad - k) / stride + 1, wo = (wd + 2 * pad - k) / stride + 1;
  Tensor y({n, o, ho, wo});
  for (int64_t b0 = 0; b0 < n; ++b0)
    for (int64_t oc = 0; oc < o; ++oc)
      for (int64_t i = 0; i < ho; ++i)
        for (int64_t j = 0; j < wo; ++j) {
          double acc = b.empty() ? 0.0 : b[oc];
          for (int64_t ic = 0; ic < c; ++ic)
            for (int64_t ki = 0; ki < k; ++ki)
              for (int64_t kj = 0; kj < k; ++kj) {
                const int64_t yi = i * stride + ki - pad, xj = j * stride + kj - pad;
                if (yi < 0 || yi >= h || xj < 0 || xj >= wd) continue;
                acc += static_cast<double>(x[((b0 * c + ic) * h + yi) * wd + xj]) * w[((oc * c + ic) * k + ki) * k + kj];
              }
          y[((b0 * o + oc) * ho + i) * wo + j] = static_cast<float>(acc);
        }
  return y;
}

Tensor nchw_to_nhwc(const Tensor& x) {
  const int64_t n = x.dim(0), c = x.dim(1), h = x.dim(2), w = x.dim(3);
  Tensor y({n, h, w, c});
  for (int64_t b = 0; b < n; ++b)
    for (int64_t ch = 0; ch < c; ++ch)
      for (int64_t i = 0; i < h * w; ++i) y[(b * h * w + i) * c + ch] = x[(b * c + ch) * h * w + i];
  return y;
}

TEST_F(Int8Kernels, ConvMatchesReferenceOnQuantizedOperands) {
  // channels (multiples of 16 and not), kernel, stride, padding
  for (auto [c, o, k, stride, pad] : {std::tuple{32, 48, 3, 1, 1}, {64, 32, 1, 1, 0}, {48, 64, 3, 2, 1}, {20, 24, 3, 1, 1}}) {
    const Tensor w = random_tensor({o, c, k, k}, 5, 0.2f), b = random_tensor({o}, 6);
    Tensor x = random_tensor({2, c, 9, 10}, 7);
    x[5] = -6.0f;
    const Quantized q = quantize_operands(x, w);
    const Tensor expected = conv_reference(q.x, q.w, b, stride, pad);
    const Tensor exact = conv_reference(x, w, b, stride, pad);
    for (ConvLayouts layouts : {ConvLayouts{}, kChannelsLast}) {
      const bool nhwc = layouts.src == ImageLayout::nhwc;
      SCOPED_TRACE(std::to_string(c) + "->" + std::to_string(o) + " k" + std::to_string(k) + " s" +
                   std::to_string(stride) + (nhwc ? " nhwc" : " nchw"));
      const PreparedConv2d conv(w, b, stride, pad, ComputeType::int8, layouts);
      ASSERT_EQ(conv.compute_type(), ComputeType::int8);
      const Tensor y = conv2d(nhwc ? nchw_to_nhwc(x) : x, conv);
      EXPECT_TENSOR_NEAR(y, nhwc ? nchw_to_nhwc(expected) : expected, 1e-5);
      const auto d = testing::compare(y, nhwc ? nchw_to_nhwc(exact) : exact);
      EXPECT_GT(d.max_abs, 1e-4 * d.max_ref) << "the int8 convolution did not quantize";
      EXPECT_LT(d.max_abs, 2e-2 * d.max_ref);
      // + residual (fp32, after the scaling), then ReLU.
      const Tensor residual = random_tensor(y.shape(), 8, 10.0f);
      Tensor relu_expected = nhwc ? nchw_to_nhwc(expected) : expected.clone();
      for (int64_t i = 0; i < relu_expected.numel(); ++i)
        relu_expected[i] = std::max(0.0f, relu_expected[i] + residual[i]);
      EXPECT_TENSOR_NEAR(conv2d(nhwc ? nchw_to_nhwc(x) : x, conv.with_relu(), residual), relu_expected, 1e-5);
    }
  }
}

// An int8 weight exists in one packed layout only (oneDNN cannot reorder an s8 weight that carries its compensation):
// a later input size whose best kernel would want another layout (at 4x4, the UNet's deepest level at 256x256,
// against the 64x64 the weight was packed for) runs on the packed one, with the same numbers.
TEST_F(Int8Kernels, ConvRunsAtSizesWhoseKernelWantsAnotherLayout) {
  for (auto [c, o, k] : {std::tuple{640, 320, 1}, {320, 320, 3}}) {
    const Tensor w = random_tensor({o, c, k, k}, 12, 0.05f), b = random_tensor({o}, 13);
    const PreparedConv2d conv(w, b, 1, k / 2, ComputeType::int8, kChannelsLast);
    for (int64_t size : {4, 8}) {
      SCOPED_TRACE(std::to_string(c) + "->" + std::to_string(o) + " k" + std::to_string(k) + " at " +
                   std::to_string(size));
      const Tensor x = random_tensor({2, c, size, size}, 14);
      const Quantized q = quantize_operands(x, w);
      EXPECT_TENSOR_NEAR(conv2d(nchw_to_nhwc(x), conv), nchw_to_nhwc(conv_reference(q.x, q.w, b, 1, k / 2)), 1e-5);
    }
  }
}

// A convolution whose input comes from the op before (ConvSource: group norm, upsample) is quantized from the
// whole fp32 input, as a plain tensor is.
TEST_F(Int8Kernels, ConvFromSourceEqualsConvFromTensor) {
  const Tensor w = random_tensor({32, 32, 3, 3}, 9, 0.2f), b = random_tensor({32}, 10);
  const Tensor x = random_tensor({1, 8, 8, 32}, 11);
  const PreparedConv2d conv(w, b, 1, 1, ComputeType::int8, kChannelsLast);
  const ConvSource source{x.shape(), [&x](void* out, ComputeType type) {
                            ASSERT_EQ(type, ComputeType::f32);
                            std::copy(x.data(), x.data() + x.numel(), static_cast<float*>(out));
                          }};
  EXPECT_EQ(conv2d(source, conv).to_vector(), conv2d(x, conv).to_vector());
}

}  // namespace
}  // namespace sdcpu
