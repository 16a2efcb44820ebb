// PreparedConv2d (weights prepacked once into oneDNN's blocked layout; NCHW activations reordered at the edges,
// channels-last ones taken as they are) against a scalar reference: odd sizes, 1x1 and 3x3, stride 2, asymmetric
// padding, channel counts that are and are not multiples of oneDNN's blocks, with and without bias and the fused
// residual add, and inputs written by the op before (ConvSource).
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "core/error.h"
#include "kernels/conv2d.h"
#include "kernels/cpu_features.h"
#include "kernels/vector_math.h"
#include "random_tensor.h"
#include "test_support.h"

namespace sdcpu {
namespace {

using testing::random_tensor;

// Zero padding per side, then the plain convolution, in double; + residual when given.
Tensor conv_reference(const Tensor& x, const Tensor& w, const Tensor& b, int stride, Conv2dPadding p,
                      const Tensor& residual = Tensor()) {
  const int64_t n = x.dim(0), c = x.dim(1), h = x.dim(2), wd = x.dim(3), o = w.dim(0), kh = w.dim(2), kw = w.dim(3);
  const int64_t ho = (h + p.top + p.bottom - kh) / stride + 1, wo = (wd + p.left + p.right - kw) / stride + 1;
  Tensor y({n, o, ho, wo});
  for (int64_t bi = 0; bi < n; ++bi)
    for (int64_t oc = 0; oc < o; ++oc)
      for (int64_t i = 0; i < ho; ++i)
        for (int64_t j = 0; j < wo; ++j) {
          double acc = b.empty() ? 0.0 : b[oc];
          for (int64_t ic = 0; ic < c; ++ic)
            for (int64_t di = 0; di < kh; ++di)
              for (int64_t dj = 0; dj < kw; ++dj) {
                const int64_t yi = i * stride - p.top + di, xj = j * stride - p.left + dj;
                if (yi < 0 || yi >= h || xj < 0 || xj >= wd) continue;
                acc +=
                    static_cast<double>(x[((bi * c + ic) * h + yi) * wd + xj]) * w[((oc * c + ic) * kh + di) * kw + dj];
              }
          const int64_t idx = ((bi * o + oc) * ho + i) * wo + j;
          y[idx] = static_cast<float>(acc + (residual.empty() ? 0.0 : residual[idx]));
        }
  return y;
}

struct Case {
  int64_t n, c, o, h, w, k;
  int stride;
  Conv2dPadding pad;
};

TEST(Kernels, PreparedConv2dMatchesReference) {
  const std::vector<Case> cases = {
      {2, 5, 6, 9, 7, 3, 1, {1, 1, 1, 1}},      // odd sizes, channels below one block
      {2, 5, 6, 9, 7, 3, 2, {1, 1, 1, 1}},      // stride 2
      {1, 32, 48, 8, 8, 3, 2, {0, 0, 1, 1}},    // Downsample2D with padding 0
      {1, 32, 32, 9, 7, 3, 2, {1, 0, 2, 1}},    // arbitrary asymmetric padding
      {2, 40, 24, 6, 5, 1, 1, {0, 0, 0, 0}},    // 1x1 (conv_shortcut)
      {2, 4, 32, 10, 10, 3, 1, {1, 1, 1, 1}},   // conv_in: 4 latent channels
      {2, 32, 4, 10, 10, 3, 1, {1, 1, 1, 1}},   // conv_out: 4 output channels
      {1, 64, 64, 12, 12, 3, 1, {1, 1, 1, 1}},  // whole blocks
      {1, 17, 35, 5, 11, 3, 1, {2, 2, 2, 2}},   // padding wider than the kernel's half
  };
  for (const Case& t : cases) {
    SCOPED_TRACE(shape_to_string({t.n, t.c, t.o, t.h, t.w, t.k, t.stride}));
    const Tensor x = random_tensor({t.n, t.c, t.h, t.w}, 1), w = random_tensor({t.o, t.c, t.k, t.k}, 2),
                 b = random_tensor({t.o}, 3);
    for (bool with_bias : {true, false}) {
      const Tensor bias = with_bias ? b : Tensor();
      const PreparedConv2d conv(w, bias, t.stride, t.pad);
      const Tensor expected = conv_reference(x, w, bias, t.stride, t.pad);
      const Tensor y = conv2d(x, conv);
      EXPECT_TENSOR_NEAR(y, expected, 1e-5);
      // The plain path agrees too.
      EXPECT_TENSOR_NEAR(conv2d(x, w, bias, t.stride, t.pad.top, t.pad.left, t.pad.bottom, t.pad.right), expected,
                         1e-5);
      // Residual add fused into the convolution (a sum post-op).
      const Tensor residual = random_tensor(y.shape(), 4);
      EXPECT_TENSOR_NEAR(conv2d(x, conv, residual), conv_reference(x, w, bias, t.stride, t.pad, residual), 1e-5);
      // Second call reuses the cached plan and gives the same bits.
      EXPECT_TENSOR_NEAR(conv2d(x, conv), y, 0.0);
    }
  }
}

// The shapes the networks' convolutions take, at small sizes.
const std::vector<Case> kNetworkCases = {
    {2, 32, 48, 9, 7, 3, 1, {1, 1, 1, 1}},   // odd sizes
    {1, 32, 32, 9, 8, 3, 2, {0, 0, 1, 1}},   // Downsample2D with padding 0
    {2, 48, 32, 6, 5, 1, 1, {0, 0, 0, 0}},   // 1x1 (conv_shortcut)
    {2, 4, 32, 10, 10, 3, 1, {1, 1, 1, 1}},  // conv_in: 4 latent channels
    {2, 32, 4, 10, 10, 3, 1, {1, 1, 1, 1}},  // conv_out: 4 output channels
    {1, 17, 35, 5, 11, 3, 1, {2, 2, 2, 2}},  // channels not a multiple of a block
};

// bf16: the weights and the input are rounded to bfloat16, the products accumulate in fp32. So the result must
// equal the fp32 reference run on the rounded input and weights, to fp32 accumulation error (the same 1e-5 as
// the fp32 path); and it must differ from the unrounded reference by about bf16's rounding (2^-9 relative per
// operand), which shows the bf16 kernel really ran.
TEST(Kernels, PreparedConv2dBf16MatchesReferenceOnRoundedOperands) {
  if (!cpu_has_native_bf16()) GTEST_SKIP() << "no AVX512_BF16 / AMX on this CPU";
  for (const Case& t : kNetworkCases) {
    SCOPED_TRACE(shape_to_string({t.n, t.c, t.o, t.h, t.w, t.k, t.stride}));
    const Tensor x = random_tensor({t.n, t.c, t.h, t.w}, 1), w = random_tensor({t.o, t.c, t.k, t.k}, 2),
                 b = random_tensor({t.o}, 3);
    const PreparedConv2d conv(w, b, t.stride, t.pad, ComputeType::bf16);
    const Tensor y = conv2d(x, conv);
    if (conv.compute_type() == ComputeType::f32) {  // no fast bf16 kernel for this shape: it stayed fp32
      EXPECT_TENSOR_NEAR(y, conv_reference(x, w, b, t.stride, t.pad), 1e-5);
      continue;
    }
    const Tensor xr = testing::round_to_bf16(x), wr = testing::round_to_bf16(w);
    EXPECT_TENSOR_NEAR(y, conv_reference(xr, wr, b, t.stride, t.pad), 1e-5);
    const auto d = testing::compare(y, conv_reference(x, w, b, t.stride, t.pad));
    EXPECT_GT(d.max_abs, 1e-4 * d.max_ref) << "the bf16 convolution did not round its operands";
    EXPECT_LT(d.max_abs, 2e-2 * d.max_ref);
    // The fused residual stays fp32: added after the products, not rounded.
    const Tensor residual = random_tensor(y.shape(), 4);
    EXPECT_TENSOR_NEAR(conv2d(x, conv, residual), conv_reference(xr, wr, b, t.stride, t.pad, residual), 1e-5);
  }
  // At Stable Diffusion's channel counts bf16 must really be taken (a silent fp32 fallback would be slow).
  for (auto [c, o, k] : {std::tuple{64, 64, 3}, {64, 32, 1}, {320, 320, 3}}) {
    const PreparedConv2d conv(random_tensor({o, c, k, k}, 20), random_tensor({o}, 21), 1, k / 2, ComputeType::bf16);
    EXPECT_EQ(conv.compute_type(), ComputeType::bf16) << c << " -> " << o << " k" << k;
    const std::string impl = conv.implementation({2, c, 16, 16});
    EXPECT_NE(impl.rfind("ref", 0), 0u) << impl;
  }
}

// Channels-last images [N, H, W, C] in and out (the networks' layout), and the network edges' mixed forms (NCHW
// in, channels-last out; channels-last in, NCHW out), in fp32 and bf16: the same values as the NCHW reference.
TEST(Kernels, PreparedConv2dChannelsLastMatchesReference) {
  const ConvLayouts layouts[] = {
      kChannelsLast, {ImageLayout::nchw, ImageLayout::nhwc}, {ImageLayout::nhwc, ImageLayout::nchw}};
  for (const Case& t : kNetworkCases)
    for (const ConvLayouts& l : layouts)
      for (ComputeType compute : {ComputeType::f32, ComputeType::bf16}) {
        if (compute == ComputeType::bf16 && !cpu_has_native_bf16()) continue;
        SCOPED_TRACE(shape_to_string({t.n, t.c, t.o, t.h, t.w, t.k, t.stride}) + " src " +
                     (l.src == ImageLayout::nhwc ? "nhwc" : "nchw") + " dst " +
                     (l.dst == ImageLayout::nhwc ? "nhwc" : "nchw") + " " + compute_type_name(compute));
        const Tensor x = random_tensor({t.n, t.c, t.h, t.w}, 1), w = random_tensor({t.o, t.c, t.k, t.k}, 2),
                     b = random_tensor({t.o}, 3);
        const PreparedConv2d conv(w, b, t.stride, t.pad, compute, l);
        const bool bf16 = conv.compute_type() == ComputeType::bf16;
        const Tensor xr = bf16 ? testing::round_to_bf16(x) : x, wr = bf16 ? testing::round_to_bf16(w) : w;
        const Tensor expected = conv_reference(xr, wr, b, t.stride, t.pad);
        auto in = [&](const Tensor& nchw) { return l.src == ImageLayout::nhwc ? testing::nchw_to_nhwc(nchw) : nchw; };
        auto out = [&](const Tensor& y) { return l.dst == ImageLayout::nhwc ? testing::nhwc_to_nchw(y) : y; };
        auto to_dst = [&](const Tensor& nchw) {
          return l.dst == ImageLayout::nhwc ? testing::nchw_to_nhwc(nchw) : nchw;
        };
        const Tensor y = conv2d(in(x), conv);
        EXPECT_TENSOR_NEAR(out(y), expected, 1e-5);
        const Tensor residual = random_tensor(expected.shape(), 4);
        EXPECT_TENSOR_NEAR(out(conv2d(in(x), conv, to_dst(residual))),
                           conv_reference(xr, wr, b, t.stride, t.pad, residual), 1e-5);
      }
}

// A ConvSource (the op before writing the convolution's input itself, in its precision) gives the same bits as
// that op's fp32 tensor passed to the convolution, whose reorder then rounds it: the writers round to bf16 as
// oneDNN's reorder does.
TEST(Kernels, PreparedConv2dFromAConvSourceEqualsFromItsTensor) {
  const Tensor x = random_tensor({2, 9, 7, 32}, 30);
  for (ComputeType compute : {ComputeType::f32, ComputeType::bf16})
    for (ConvLayouts l : {kChannelsLast, ConvLayouts{ImageLayout::nhwc, ImageLayout::nchw}}) {
      if (compute == ComputeType::bf16 && !cpu_has_native_bf16()) continue;
      SCOPED_TRACE(compute_type_name(compute));
      const PreparedConv2d conv(random_tensor({48, 32, 3, 3}, 31), random_tensor({48}, 32), 1, 1, compute, l);
      // x * 1.5 - 0.25: a stand-in for group norm / upsample, whose own writers are tested with their kernels.
      Tensor input(x.shape());
      for (int64_t i = 0; i < x.numel(); ++i) input[i] = x[i] * 1.5f - 0.25f;
      int calls = 0;
      const ConvSource source{x.shape(), [&](void* out, ComputeType type) {
                                ++calls;
                                EXPECT_EQ(type, conv.compute_type());
                                for (int64_t i = 0; i < x.numel(); ++i) {
                                  if (type == ComputeType::bf16)
                                    static_cast<uint16_t*>(out)[i] = simd::to_bf16(input[i]);
                                  else
                                    static_cast<float*>(out)[i] = input[i];
                                }
                              }};
      const Tensor residual = random_tensor(conv2d(input, conv).shape(), 33);
      EXPECT_EQ(conv2d(source, conv).to_vector(), conv2d(input, conv).to_vector());
      EXPECT_EQ(conv2d(source, conv, residual).to_vector(), conv2d(input, conv, residual).to_vector());
      EXPECT_EQ(calls, 2);
    }
}

// A residual nobody else holds becomes the output (the convolution adds into it); a shared one is left as it
// was. Both give the same values.
TEST(Kernels, PreparedConv2dAddsIntoAnUnsharedResidual) {
  const PreparedConv2d conv(random_tensor({16, 16, 3, 3}, 34), random_tensor({16}, 35), 1, 1, ComputeType::f32,
                            kChannelsLast);
  const Tensor x = random_tensor({1, 6, 5, 16}, 36);
  const Tensor shared = random_tensor({1, 6, 5, 16}, 37);
  const std::vector<float> before = shared.to_vector();
  const Tensor y_shared = conv2d(x, conv, shared);
  EXPECT_EQ(shared.to_vector(), before);
  EXPECT_NE(y_shared.data(), shared.data());
  Tensor unshared = shared.clone();
  const float* storage = unshared.data();
  const Tensor y = conv2d(x, conv, std::move(unshared));
  EXPECT_EQ(y.data(), storage);
  EXPECT_EQ(y.to_vector(), y_shared.to_vector());
}

// with_relu(): max(0, conv(x) + bias [+ residual]) from the same packed weights, in every layout the networks use,
// with and without bias and residual (TAESD's blocks: conv + ReLU, and conv + skip, then ReLU); the plain
// convolution it was made from is unchanged.
TEST(Kernels, PreparedConv2dWithReluMatchesReference) {
  const ConvLayouts layouts[] = {kChannelsLast, {ImageLayout::nchw, ImageLayout::nhwc}};
  auto relu = [](const Tensor& x) {
    Tensor y = x.clone();  // a copy of a Tensor shares its storage
    for (int64_t i = 0; i < y.numel(); ++i) y[i] = std::max(y[i], 0.0f);
    return y;
  };
  for (const ConvLayouts& l : layouts)
    for (bool with_bias : {true, false}) {
      SCOPED_TRACE(std::string(l.src == ImageLayout::nhwc ? "nhwc" : "nchw") + (with_bias ? " bias" : " no bias"));
      const Tensor x = random_tensor({2, 16, 9, 7}, 40), w = random_tensor({16, 16, 3, 3}, 41),
                   b = with_bias ? random_tensor({16}, 42) : Tensor();
      const PreparedConv2d plain(w, b, 1, 1, ComputeType::f32, l);
      const PreparedConv2d fused = plain.with_relu();
      EXPECT_TRUE(fused.relu());
      EXPECT_FALSE(plain.relu());
      auto in = [&](const Tensor& nchw) { return l.src == ImageLayout::nhwc ? testing::nchw_to_nhwc(nchw) : nchw; };
      auto out = [&](const Tensor& y) { return testing::nhwc_to_nchw(y); };  // both layouts write nhwc
      const Tensor expected = conv_reference(x, w, b, 1, {1, 1, 1, 1});
      EXPECT_TENSOR_NEAR(out(conv2d(in(x), fused)), relu(expected), 1e-5);
      EXPECT_TENSOR_NEAR(out(conv2d(in(x), plain)), expected, 1e-5);  // the same weights, no ReLU
      const Tensor residual = random_tensor(expected.shape(), 43);
      EXPECT_TENSOR_NEAR(out(conv2d(in(x), fused, testing::nchw_to_nhwc(residual))),
                         relu(conv_reference(x, w, b, 1, {1, 1, 1, 1}, residual)), 1e-5);
    }
}

TEST(Kernels, PreparedConv2dSeveralShapesShareTheWeights) {
  const Tensor w = random_tensor({48, 32, 3, 3}, 5), b = random_tensor({48}, 6);
  const PreparedConv2d conv(w, b, 1, 1);
  EXPECT_EQ(conv.in_channels(), 32);
  EXPECT_EQ(conv.out_channels(), 48);
  EXPECT_FALSE(conv.implementation({1, 32, 8, 8}).empty());
  for (Shape xs : {Shape{1, 32, 8, 8}, Shape{3, 32, 5, 13}, Shape{1, 32, 1, 1}, Shape{1, 32, 8, 8}}) {
    const Tensor x = random_tensor(xs, 7);
    EXPECT_TENSOR_NEAR(conv2d(x, conv), conv_reference(x, w, b, 1, Conv2dPadding::same(1)), 1e-5);
  }
  // with_padding shares the packed weights.
  const PreparedConv2d down = conv.with_padding({0, 0, 1, 1});
  const Tensor x = random_tensor({2, 32, 8, 8}, 8);
  EXPECT_TENSOR_NEAR(conv2d(x, down), conv_reference(x, w, b, 1, {0, 0, 1, 1}), 1e-5);
  EXPECT_EQ(conv2d(x, down).shape(), (Shape{2, 48, 7, 7}));
}

TEST(Kernels, PreparedConv2dUsesAnOptimizedImplementation) {
  // Stable Diffusion's channel counts: conv_in (4 latent / 3 image channels), conv_out (4), 3x3 and 1x1 convs on
  // multiples of 16. oneDNN's reference implementation would be orders of magnitude slower.
  for (auto [c, o, k] : {std::tuple{4, 32, 3}, {3, 32, 3}, {32, 4, 3}, {64, 64, 3}, {64, 32, 1}, {32, 8, 3}}) {
    const PreparedConv2d conv(random_tensor({o, c, k, k}, 20), random_tensor({o}, 21), 1, k / 2);
    const std::string impl = conv.implementation({2, c, 16, 16});
    EXPECT_NE(impl.rfind("ref", 0), 0u) << c << " -> " << o << " k" << k << ": " << impl;
  }
}

TEST(Kernels, PreparedConv2dFromSeveralThreads) {
  const Tensor w = random_tensor({32, 16, 3, 3}, 9), b = random_tensor({32}, 10);
  const PreparedConv2d conv(w, b, 1, 1);
  std::vector<Tensor> inputs, outputs(4);
  for (int i = 0; i < 4; ++i) inputs.push_back(random_tensor({1, 16, 6 + i, 7}, 11 + i));
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) threads.emplace_back([&, i] { outputs[i] = conv2d(inputs[i], conv); });
  for (auto& t : threads) t.join();
  for (int i = 0; i < 4; ++i)
    EXPECT_TENSOR_NEAR(outputs[i], conv_reference(inputs[i], w, b, 1, Conv2dPadding::same(1)), 1e-5);
}

TEST(Kernels, PreparedConv2dRejectsBadArguments) {
  const Tensor w = random_tensor({8, 4, 3, 3}, 12);
  EXPECT_THROW(PreparedConv2d(random_tensor({8, 4, 3}, 13), Tensor(), 1, 1), InvalidArgument);
  EXPECT_THROW(PreparedConv2d(w, random_tensor({7}, 14), 1, 1), InvalidArgument);
  EXPECT_THROW(PreparedConv2d(w, Tensor(), 0, 1), InvalidArgument);
  const PreparedConv2d conv(w, Tensor(), 2, 0);
  EXPECT_THROW(conv2d(random_tensor({1, 5, 8, 8}, 15), conv), InvalidArgument);  // channel mismatch
  EXPECT_THROW(conv2d(random_tensor({1, 4, 2, 2}, 16), conv), InvalidArgument);  // smaller than the kernel
  EXPECT_THROW(conv2d(random_tensor({4, 8, 8}, 17), conv), InvalidArgument);     // not 4-D
  EXPECT_THROW(conv2d(random_tensor({1, 4, 8, 8}, 18), conv, random_tensor({1, 8, 4, 4}, 19)),
               InvalidArgument);  // residual shape (the output is [1, 8, 3, 3])
  EXPECT_THROW(conv2d(random_tensor({1, 4, 8, 8}, 18), PreparedConv2d()), InvalidArgument);
  EXPECT_THROW(conv.with_padding({-1, 0, 0, 0}), InvalidArgument);
  // A channels-last source for an NCHW convolution.
  const ConvSource nhwc{{1, 8, 8, 4}, [](void*, ComputeType) { ADD_FAILURE() << "written"; }};
  EXPECT_THROW(conv2d(nhwc, conv), InvalidArgument);
}

}  // namespace
}  // namespace sdcpu
