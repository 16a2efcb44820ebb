// PreparedLinear (the weight prepacked once into oneDNN's blocked matmul layout) against a scalar reference,
// at row counts from 1 (the time embedding) to a few hundred, feature counts that are and are not multiples
// of oneDNN's blocks, with and without bias.
#include <gtest/gtest.h>

#include <random>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "core/error.h"
#include "kernels/cpu_features.h"
#include "kernels/linear.h"
#include "random_tensor.h"
#include "test_support.h"

namespace sdcpu {
namespace {

using testing::random_tensor;

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

TEST(Kernels, PreparedLinearMatchesReference) {
  for (auto [k, n] : {std::tuple{17, 11}, {64, 128}, {320, 96}, {100, 200}}) {
    const Tensor w = random_tensor({n, k}, 1), b = random_tensor({n}, 2);
    for (bool with_bias : {true, false}) {
      const Tensor bias = with_bias ? b : Tensor();
      const PreparedLinear layer(w, bias);
      EXPECT_EQ(layer.in_features(), k);
      EXPECT_EQ(layer.out_features(), n);
      for (Shape xs : {Shape{1, k}, Shape{2, k}, Shape{2, 77, k}, Shape{3, 5, k}, Shape{300, k}, Shape{2, k}}) {
        SCOPED_TRACE(shape_to_string(xs) + " -> " + std::to_string(n));
        const Tensor x = random_tensor(xs, 3);
        const Tensor y = linear(x, layer);
        EXPECT_TENSOR_NEAR(y, linear_reference(x, w, bias), 1e-5);
        EXPECT_TENSOR_NEAR(linear(x, w, bias), y, 1e-5);  // the plain path agrees
      }
    }
  }
}

// bf16: weight and input rows rounded to bfloat16, fp32 accumulation, fp32 bias and output. Equal to the fp32
// reference on rounded operands up to accumulation error, and visibly different from the unrounded one.
TEST(Kernels, PreparedLinearBf16MatchesReferenceOnRoundedOperands) {
  if (!cpu_has_native_bf16()) GTEST_SKIP() << "no AVX512_BF16 / AMX on this CPU";
  for (auto [k, n] : {std::tuple{17, 11}, {64, 128}, {320, 96}, {768, 320}}) {
    const Tensor w = random_tensor({n, k}, 1), b = random_tensor({n}, 2);
    const PreparedLinear layer(w, b, ComputeType::bf16);
    EXPECT_EQ(layer.compute_type(), ComputeType::bf16) << k << " -> " << n;
    const Tensor wr = testing::round_to_bf16(w);
    for (Shape xs : {Shape{1, k}, Shape{2, 77, k}, Shape{300, k}}) {
      SCOPED_TRACE(shape_to_string(xs) + " -> " + std::to_string(n));
      const Tensor x = random_tensor(xs, 3);
      const Tensor y = linear(x, layer);
      EXPECT_TENSOR_NEAR(y, linear_reference(testing::round_to_bf16(x), wr, b), 1e-5);
      const auto d = testing::compare(y, linear_reference(x, w, b));
      EXPECT_GT(d.max_abs, 1e-4 * d.max_ref) << "the bf16 linear did not round its operands";
      EXPECT_LT(d.max_abs, 2e-2 * d.max_ref);
    }
  }
}

// + residual, added after the bias by the product's sum post-op, in fp32 even in bf16 (never rounded). A shared
// residual is left as it was; an unshared one (std::move) becomes the output. Both give the same values.
TEST(Kernels, PreparedLinearAddsTheResidual) {
  const Tensor w = random_tensor({96, 320}, 1), b = random_tensor({96}, 2), x = random_tensor({2, 77, 320}, 3);
  for (ComputeType compute : {ComputeType::f32, ComputeType::bf16}) {
    if (compute == ComputeType::bf16 && !cpu_has_native_bf16()) continue;
    SCOPED_TRACE(compute_type_name(compute));
    const PreparedLinear layer(w, b, compute);
    const bool bf16 = layer.compute_type() == ComputeType::bf16;
    Tensor expected = linear_reference(bf16 ? testing::round_to_bf16(x) : x, bf16 ? testing::round_to_bf16(w) : w, b);
    const Tensor residual = random_tensor({2, 77, 96}, 4, 100.0f);  // large: a rounded residual would show
    for (int64_t i = 0; i < expected.numel(); ++i) expected[i] += residual[i];
    const std::vector<float> before = residual.to_vector();
    const Tensor y_shared = linear(x, layer, residual);
    EXPECT_TENSOR_NEAR(y_shared, expected, 1e-6);
    EXPECT_EQ(residual.to_vector(), before);
    Tensor unshared = residual.clone();
    const float* storage = unshared.data();
    const Tensor y = linear(x, layer, std::move(unshared));
    EXPECT_EQ(y.data(), storage);
    EXPECT_EQ(y.to_vector(), y_shared.to_vector());
  }
  const PreparedLinear layer(w, b);
  EXPECT_THROW(linear(x, layer, random_tensor({2, 77, 95}, 5)), InvalidArgument);
}

TEST(Kernels, PreparedLinearEmptyRowsAndErrors) {
  const Tensor w = random_tensor({8, 4}, 4);
  const PreparedLinear layer(w, Tensor());
  EXPECT_EQ(linear(Tensor::zeros({0, 4}), layer).shape(), (Shape{0, 8}));
  EXPECT_THROW(linear(random_tensor({2, 5}, 5), layer), InvalidArgument);
  EXPECT_THROW(linear(random_tensor({2, 4}, 5), PreparedLinear()), InvalidArgument);
  EXPECT_THROW(PreparedLinear(random_tensor({8}, 6), Tensor()), InvalidArgument);
  EXPECT_THROW(PreparedLinear(w, random_tensor({7}, 7)), InvalidArgument);
}

TEST(Kernels, PreparedLinearFromSeveralThreads) {
  const Tensor w = random_tensor({48, 32}, 8), b = random_tensor({48}, 9);
  const PreparedLinear layer(w, b);
  std::vector<Tensor> inputs, outputs(4);
  for (int i = 0; i < 4; ++i) inputs.push_back(random_tensor({3 + i, 32}, 10 + i));
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) threads.emplace_back([&, i] { outputs[i] = linear(inputs[i], layer); });
  for (auto& t : threads) t.join();
  for (int i = 0; i < 4; ++i) EXPECT_TENSOR_NEAR(outputs[i], linear_reference(inputs[i], w, b), 1e-5);
}

}  // namespace
}  // namespace sdcpu
