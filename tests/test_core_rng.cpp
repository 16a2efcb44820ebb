// TorchGenerator against torch.randn goldens from PyTorch 1.13: every value must be bit-identical.
#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "core/torch_rng.h"
#include "test_support.h"

namespace sdcpu {
namespace {

// Counts values whose bit patterns differ (so -0 vs 0 or NaN payloads would count too).
int64_t count_bit_mismatches(const Tensor& actual, const Tensor& expected, int64_t* first = nullptr) {
  int64_t bad = 0;
  for (int64_t i = 0; i < expected.numel(); ++i) {
    if (std::memcmp(actual.data() + i, expected.data() + i, sizeof(float)) != 0) {
      if (bad == 0 && first) *first = i;
      ++bad;
    }
  }
  return bad;
}

void expect_golden(const std::string& name, uint64_t seed) {
  SCOPED_TRACE(name);
  const SafetensorsFile& f = testing::golden("tiny-sd/rng.safetensors");
  const Tensor expected = f.read_f32(name);
  TorchGenerator gen(seed);
  const Tensor actual = gen.randn(expected.shape());
  ASSERT_EQ(actual.shape(), expected.shape());
  int64_t first = -1;
  const int64_t bad = count_bit_mismatches(actual, expected, &first);
  EXPECT_EQ(bad, 0) << "of " << expected.numel() << " values; first at " << first << ": got "
                    << (first >= 0 ? actual[first] : 0.0f) << ", expected " << (first >= 0 ? expected[first] : 0.0f);
}

// Every tensor of the golden file has a test below, so a new golden cannot be silently skipped.
TEST(TorchRng, GoldenFileHasTheExpectedTensors) {
  const SafetensorsFile& f = testing::golden("tiny-sd/rng.safetensors");
  EXPECT_EQ(f.tensors().size(), 8u);
}

// Whole blocks of 16 (the normal_fill path with no tail).
TEST(TorchRng, Latent16x16Seed0) { expect_golden("randn_1x4x16x16_seed0", 0); }
TEST(TorchRng, Latent16x16Seed42) { expect_golden("randn_1x4x16x16_seed42", 42); }
TEST(TorchRng, Latent16x16Seed1234567) { expect_golden("randn_1x4x16x16_seed1234567", 1234567); }
TEST(TorchRng, Latent64x64Seed0) { expect_golden("randn_1x4x64x64_seed0", 0); }
TEST(TorchRng, Latent64x64Seed42) { expect_golden("randn_1x4x64x64_seed42", 42); }
TEST(TorchRng, Latent64x64Seed1234567) { expect_golden("randn_1x4x64x64_seed1234567", 1234567); }
// 884 = 55 * 16 + 4: the last 16 values are redrawn and recomputed.
TEST(TorchRng, OddSizeRecomputesTail) { expect_golden("randn_1x4x13x17_seed5", 5); }
// Fewer than 16 values: the scalar normal_distribution<double> path with its cached second sample.
TEST(TorchRng, SmallTensorScalarPath) { expect_golden("randn_7_seed5", 5); }

TEST(TorchRng, OnlyLow32BitsOfSeedMatter) {
  // at::mt19937 seeds from seed & 0xffffffff.
  const Tensor a = TorchGenerator(5).randn({1, 4, 13, 17});
  const Tensor b = TorchGenerator((uint64_t{1} << 32) | 5).randn({1, 4, 13, 17});
  EXPECT_EQ(count_bit_mismatches(a, b), 0);
}

TEST(TorchRng, SameSeedSameNoiseDifferentSeedDifferentNoise) {
  const Tensor a = TorchGenerator(42).randn({1, 4, 8, 8});
  const Tensor b = TorchGenerator(42).randn({1, 4, 8, 8});
  const Tensor c = TorchGenerator(43).randn({1, 4, 8, 8});
  EXPECT_EQ(count_bit_mismatches(a, b), 0);
  EXPECT_GT(count_bit_mismatches(a, c), 200);
}

// Successive calls continue the stream as torch does. For the vectorized path the uniforms are drawn
// in order, so two whole-block draws equal one draw of both concatenated.
TEST(TorchRng, SuccessiveBlockDrawsContinueTheStream) {
  TorchGenerator g(42);
  const Tensor first = g.randn({1, 4, 16, 16});
  const Tensor second = g.randn({1, 4, 16, 16});
  const Tensor both = TorchGenerator(42).randn({2, 4, 16, 16});
  EXPECT_EQ(count_bit_mismatches(first, both.slice0(0, 1)), 0);
  EXPECT_EQ(count_bit_mismatches(second, both.slice0(1, 2)), 0);
}

// A tail draw consumes n + 16 uniforms: 884 values take 900 engine outputs. A twin reaches the same point
// with 880 values (55 whole blocks: 880 outputs) plus 10 scalar values (5 Box-Muller pairs of two random64()
// each: 20 outputs, nothing left cached); the next draws must then agree.
TEST(TorchRng, TailDrawAdvancesByNPlus16) {
  TorchGenerator g(5);
  g.randn({1, 4, 13, 17});
  const Tensor next = g.randn({256});

  TorchGenerator twin(5);
  twin.randn({880});
  twin.randn({10});
  EXPECT_EQ(count_bit_mismatches(next, twin.randn({256})), 0);

  // Had the tail redraw not advanced the stream (884 outputs only), the noise would differ.
  TorchGenerator wrong(5);
  wrong.randn({880});
  wrong.randn({2});  // 4 outputs
  EXPECT_GT(count_bit_mismatches(next, wrong.randn({256})), 200);
}

// The scalar path caches the second value of each Box-Muller pair in the generator, across calls: seven
// values then one more equal eight values at once (the 8th is the cached sin half of the 4th pair).
TEST(TorchRng, ScalarPathCachesAcrossCalls) {
  TorchGenerator g(5);
  const Tensor seven = g.randn({7});
  const Tensor one = g.randn({1});
  const Tensor eight = TorchGenerator(5).randn({8});
  const Tensor golden = testing::golden("tiny-sd/rng.safetensors").read_f32("randn_7_seed5");
  EXPECT_EQ(count_bit_mismatches(seven, golden), 0);
  EXPECT_EQ(count_bit_mismatches(seven, eight.slice0(0, 7)), 0);
  EXPECT_EQ(std::memcmp(one.data(), eight.data() + 7, sizeof(float)), 0);
}

// The vectorized path neither uses nor clears the scalar cache (normal_fill never touches it).
TEST(TorchRng, BlockPathLeavesScalarCacheAlone) {
  TorchGenerator g(5);
  const Tensor seven = g.randn({7});   // caches the 8th value
  g.randn({16});                       // 16 uniforms; cache untouched
  const Tensor cached = g.randn({1});  // the cached value, no new draw
  const Tensor eight = TorchGenerator(5).randn({8});
  EXPECT_EQ(std::memcmp(cached.data(), eight.data() + 7, sizeof(float)), 0);
}

TEST(TorchRng, EmptyAndScalarShapes) {
  TorchGenerator g(0);
  EXPECT_EQ(g.randn({0, 4}).numel(), 0);
  const Tensor s = g.randn({});
  EXPECT_EQ(s.numel(), 1);
  // The empty draw consumed nothing: a scalar from a fresh generator is the same value.
  const Tensor fresh = TorchGenerator(0).randn({1});
  EXPECT_EQ(std::memcmp(s.data(), fresh.data(), sizeof(float)), 0);
}

}  // namespace
}  // namespace sdcpu
