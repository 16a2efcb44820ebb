// Every kernel against a plain scalar reference written straight from the PyTorch definition.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "core/error.h"
#include "kernels/activations.h"
#include "kernels/attention.h"
#include "kernels/conv2d.h"
#include "kernels/linear.h"
#include "kernels/norms.h"
#include "kernels/tensor_ops.h"
#include "kernels/vector_math.h"
#include "random_tensor.h"
#include "test_support.h"

namespace sdcpu {
namespace {

using testing::random_tensor;

Tensor conv2d_reference(const Tensor& x, const Tensor& w, const Tensor& b, int stride, int pad) {
  const int64_t n = x.dim(0), c = x.dim(1), h = x.dim(2), wd = x.dim(3), o = w.dim(0), kh = w.dim(2), kw = w.dim(3);
  const int64_t ho = (h + 2 * pad - kh) / stride + 1, wo = (wd + 2 * pad - kw) / stride + 1;
  Tensor y({n, o, ho, wo});
  for (int64_t bi = 0; bi < n; ++bi)
    for (int64_t oc = 0; oc < o; ++oc)
      for (int64_t i = 0; i < ho; ++i)
        for (int64_t j = 0; j < wo; ++j) {
          double acc = b.empty() ? 0.0 : b[oc];
          for (int64_t ic = 0; ic < c; ++ic)
            for (int64_t di = 0; di < kh; ++di)
              for (int64_t dj = 0; dj < kw; ++dj) {
                const int64_t yi = i * stride - pad + di, xj = j * stride - pad + dj;
                if (yi < 0 || yi >= h || xj < 0 || xj >= wd) continue;
                acc +=
                    static_cast<double>(x[((bi * c + ic) * h + yi) * wd + xj]) * w[((oc * c + ic) * kh + di) * kw + dj];
              }
          y[((bi * o + oc) * ho + i) * wo + j] = static_cast<float>(acc);
        }
  return y;
}

TEST(Kernels, Conv2dMatchesReference) {
  for (auto [stride, pad, k] : {std::tuple{1, 1, 3}, {2, 1, 3}, {1, 0, 1}, {2, 0, 3}}) {
    Tensor x = random_tensor({2, 5, 9, 7}, 1), w = random_tensor({6, 5, k, k}, 2), b = random_tensor({6}, 3);
    EXPECT_TENSOR_NEAR(conv2d(x, w, b, stride, pad), conv2d_reference(x, w, b, stride, pad), 1e-5);
    EXPECT_TENSOR_NEAR(conv2d(x, w, Tensor(), stride, pad), conv2d_reference(x, w, Tensor(), stride, pad), 1e-5);
  }
}

TEST(Kernels, LinearMatchesReference) {
  Tensor x = random_tensor({2, 3, 17}, 4), w = random_tensor({11, 17}, 5), b = random_tensor({11}, 6);
  Tensor y = linear(x, w, b);
  ASSERT_EQ(y.shape(), (Shape{2, 3, 11}));
  Tensor ref({2, 3, 11});
  for (int64_t r = 0; r < 6; ++r)
    for (int64_t o = 0; o < 11; ++o) {
      double acc = b[o];
      for (int64_t i = 0; i < 17; ++i) acc += static_cast<double>(x[r * 17 + i]) * w[o * 17 + i];
      ref[r * 11 + o] = static_cast<float>(acc);
    }
  EXPECT_TENSOR_NEAR(y, ref, 1e-5);
}

// torch.nn.GroupNorm in double, two passes (mean, then biased variance of the deviations), on a channels-last
// x [N, ..., C]: group g of image n is channels [g * C / groups, (g + 1) * C / groups) of every position.
Tensor group_norm_reference(const Tensor& x, int groups, const Tensor& g, const Tensor& b, double eps, bool silu) {
  const int64_t n = x.dim(0), c = x.dim(-1), positions = x.numel() / (n * c), cpg = c / groups;
  Tensor ref(x.shape());
  for (int64_t image = 0; image < n; ++image)
    for (int64_t group = 0; group < groups; ++group) {
      auto at = [&](int64_t p, int64_t k) { return (image * positions + p) * c + group * cpg + k; };
      double mean = 0, var = 0;
      for (int64_t p = 0; p < positions; ++p)
        for (int64_t k = 0; k < cpg; ++k) mean += x[at(p, k)];
      mean /= static_cast<double>(positions * cpg);
      for (int64_t p = 0; p < positions; ++p)
        for (int64_t k = 0; k < cpg; ++k) var += (x[at(p, k)] - mean) * (x[at(p, k)] - mean);
      var /= static_cast<double>(positions * cpg);
      for (int64_t p = 0; p < positions; ++p)
        for (int64_t k = 0; k < cpg; ++k) {
          const int64_t ch = group * cpg + k;
          double v = (x[at(p, k)] - mean) / std::sqrt(var + eps) * g[ch] + b[ch];
          if (silu) v = v / (1 + std::exp(-v));
          ref[at(p, k)] = static_cast<float>(v);
        }
    }
  return ref;
}

TEST(Kernels, GroupNormMatchesReference) {
  struct Case {
    Shape shape;  // [N, H, W, C]
    int groups;
    float mean, std;
  };
  // Odd channel counts (vector tails in every pixel: 17, 34 = 2 x 16 + 2), a group of one channel, groups that
  // span several statistics chunks (~16K values) with a partial last one, tokens [N, L, C], and a mean far from
  // 0 (mean 100, std 1: a naive fp32 sum of squares would lose everything to cancellation).
  for (const Case& k :
       {Case{{2, 5, 3, 8}, 4, 0.0f, 3.0f}, Case{{1, 7, 5, 17}, 17, 0.0f, 1.0f}, Case{{2, 7, 5, 34}, 2, 0.5f, 2.0f},
        Case{{1, 90, 100, 4}, 2, 0.0f, 1.0f}, Case{{2, 33, 31, 6}, 3, 100.0f, 1.0f},
        Case{{1, 16, 16, 64}, 32, -100.0f, 0.1f}, Case{{2, 77, 40}, 8, 1.0f, 1.0f}}) {
    Tensor x = random_tensor(k.shape, 7, k.std);
    for (int64_t i = 0; i < x.numel(); ++i) x[i] += k.mean;
    const int64_t c = k.shape.back();
    Tensor g = random_tensor({c}, 8), b = random_tensor({c}, 9);
    for (bool silu : {false, true})
      for (float eps : {1e-5f, 1e-6f}) {
        SCOPED_TRACE(shape_to_string(k.shape) + " groups " + std::to_string(k.groups) + " mean " +
                     std::to_string(k.mean) + (silu ? " silu" : ""));
        EXPECT_TENSOR_NEAR(group_norm(x, k.groups, g, b, eps, silu), group_norm_reference(x, k.groups, g, b, eps, silu),
                           1e-6);
      }
  }
}

TEST(Kernels, GroupNormDoesNotDependOnThreadCount) {
  // 9000 pixels of 4 channels: three statistics chunks, spread over the threads.
  Tensor x = random_tensor({1, 90, 100, 4}, 21), g = random_tensor({4}, 22), b = random_tensor({4}, 23);
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  const std::vector<float> one = group_norm(x, 2, g, b, 1e-5f, true).to_vector();
  for (int t : {2, 3, 7}) {
    omp_set_num_threads(t);
    EXPECT_EQ(group_norm(x, 2, g, b, 1e-5f, true).to_vector(), one) << t << " threads";
  }
  omp_set_num_threads(threads);
}

// group_norm_into writes what group_norm returns: the same fp32 values, or exactly those rounded to bf16.
TEST(Kernels, GroupNormIntoWritesTheSameValues) {
  Tensor x = random_tensor({2, 9, 7, 48}, 25), g = random_tensor({48}, 26), b = random_tensor({48}, 27);
  const Tensor y = group_norm(x, 16, g, b, 1e-6f, true);
  std::vector<float> f32(x.numel());
  group_norm_into(x, 16, g, b, 1e-6f, true, f32.data(), ComputeType::f32);
  EXPECT_EQ(f32, y.to_vector());
  std::vector<uint16_t> bf16(x.numel());
  group_norm_into(x, 16, g, b, 1e-6f, true, bf16.data(), ComputeType::bf16);
  for (int64_t i = 0; i < x.numel(); ++i) ASSERT_EQ(bf16[i], simd::to_bf16(y[i])) << i;
}

// simd::to_bf16 rounds as testing::round_to_bf16 (ties to even) and keeps NaN a NaN; the vector stores agree with
// the scalar one lane for lane, tails included. Subnormal inputs may become zero in the vector stores:
// vcvtneps2bf16 treats them as zero (as oneDNN's reorders on the same instruction do); activations never are.
TEST(Kernels, Bf16StoresRoundToNearestEven) {
  std::vector<float> v = {1.0f, -1.0f, 0.0f, -0.0f, INFINITY, -INFINITY, NAN, 1e-40f, -3e38f, FLT_MAX};
  for (uint32_t bits : {0x3F808000u, 0x3F818000u, 0x3F807FFFu, 0x3F808001u, 0x7F7FFFFFu, 0x00008000u})
    v.push_back([](uint32_t u) {
      float f;
      std::memcpy(&f, &u, 4);
      return f;
    }(bits));  // exact ties (to even: down, then up), either side of a tie, the largest float, a subnormal tie
  std::mt19937 gen(28);
  std::normal_distribution<float> dist(0.0f, 10.0f);
  while (v.size() < 53) v.push_back(dist(gen));
  std::vector<uint16_t> stored(v.size() + 1, 0xABCD);
  int64_t i = 0;
  for (; i + simd::kWidth <= static_cast<int64_t>(v.size()); i += simd::kWidth)
    simd::store_bf16(stored.data() + i, simd::load(v.data() + i));
  const int tail = static_cast<int>(v.size() - i);
  simd::store_bf16_partial(stored.data() + i, simd::load_partial(v.data() + i, tail), tail);
  EXPECT_EQ(stored.back(), 0xABCD) << "the partial store wrote past its end";
  for (size_t k = 0; k < v.size(); ++k) {
    SCOPED_TRACE(k);
    if (std::fpclassify(v[k]) == FP_SUBNORMAL && (stored[k] & 0x7FFFu) == 0) continue;
    EXPECT_EQ(stored[k], simd::to_bf16(v[k]));
    if (std::isnan(v[k])) {
      EXPECT_EQ(stored[k] & 0x7F80u, 0x7F80u);
      EXPECT_NE(stored[k] & 0x7Fu, 0u);
      continue;
    }
    float widened;
    const uint32_t w = static_cast<uint32_t>(stored[k]) << 16;
    std::memcpy(&widened, &w, 4);
    EXPECT_EQ(widened, testing::round_to_bf16(v[k]));
  }
}

TEST(Kernels, LayerNormMatchesReference) {
  // Tails (10, 17), the SD widths (320, 768, 1280), a row longer than a statistics chunk, and large means.
  for (auto [rows, c, mean] :
       {std::tuple{3, 10, 0.0f}, {5, 17, 0.0f}, {4, 320, 0.0f}, {3, 768, 1.0f}, {2, 1280, 100.0f}, {2, 4100, -50.0f}}) {
    SCOPED_TRACE(std::to_string(rows) + "x" + std::to_string(c) + " mean " + std::to_string(mean));
    Tensor x = random_tensor({rows, c}, 10, 2.0f), g = random_tensor({c}, 11), b = random_tensor({c}, 12);
    for (int64_t i = 0; i < x.numel(); ++i) x[i] += mean;
    Tensor y = layer_norm(x, g, b, 1e-5f), ref(x.shape());
    for (int64_t r = 0; r < rows; ++r) {
      double m = 0, var = 0;
      for (int64_t i = 0; i < c; ++i) m += x[r * c + i];
      m /= c;
      for (int64_t i = 0; i < c; ++i) var += (x[r * c + i] - m) * (x[r * c + i] - m);
      var /= c;
      for (int64_t i = 0; i < c; ++i)
        ref[r * c + i] = static_cast<float>((x[r * c + i] - m) / std::sqrt(var + 1e-5) * g[i] + b[i]);
    }
    EXPECT_TENSOR_NEAR(y, ref, 1e-6);
  }
}

Tensor attention_reference(const Tensor& q, const Tensor& k, const Tensor& v, int heads, bool causal) {
  const int64_t bsz = q.dim(0), lq = q.dim(1), lk = k.dim(1), width = q.dim(2), d = width / heads;
  Tensor out(q.shape());
  std::vector<double> s(lk);
  for (int64_t b = 0; b < bsz; ++b)
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < lq; ++i) {
        double mx = -INFINITY;
        for (int64_t j = 0; j < lk; ++j) {
          double dot = 0;
          for (int64_t e = 0; e < d; ++e)
            dot += static_cast<double>(q[(b * lq + i) * width + h * d + e]) * k[(b * lk + j) * width + h * d + e];
          s[j] = (causal && j > i) ? -INFINITY : dot / std::sqrt(static_cast<double>(d));
          mx = std::max(mx, s[j]);
        }
        double sum = 0;
        for (int64_t j = 0; j < lk; ++j) sum += (s[j] = std::exp(s[j] - mx));
        for (int64_t e = 0; e < d; ++e) {
          double acc = 0;
          for (int64_t j = 0; j < lk; ++j) acc += s[j] * v[(b * lk + j) * width + h * d + e];
          out[(b * lq + i) * width + h * d + e] = static_cast<float>(acc / sum);
        }
      }
  return out;
}

TEST(Kernels, AttentionMatchesReference) {
  // Sizes that are not multiples of the tiles, several key tiles, more than one head.
  Tensor q = random_tensor({2, 70, 24}, 13), k = random_tensor({2, 300, 24}, 14), v = random_tensor({2, 300, 24}, 15);
  EXPECT_TENSOR_NEAR(attention(q, k, v, 3), attention_reference(q, k, v, 3, false), 1e-5);
  Tensor kc = random_tensor({2, 70, 24}, 16), vc = random_tensor({2, 70, 24}, 17);
  EXPECT_TENSOR_NEAR(attention(q, kc, vc, 2, true), attention_reference(q, kc, vc, 2, true), 1e-5);
}

// Each element within tol of the double value, relative to max(1, |value|).
#define EXPECT_NEAR_SCALED(actual, expected, tol) \
  EXPECT_NEAR(actual, expected, (tol)*std::max(1.0, std::fabs(static_cast<double>(expected))))

TEST(Kernels, ActivationsMatchDefinitions) {
  // 5 x 38 = 190 values: whole vectors and a tail; N(0, 3) reaches the exp clamp-free range and erf's both branches.
  Tensor x = random_tensor({5, 38}, 18, 3.0f);
  for (int64_t i = 0; i < 6; ++i) x[i] = static_cast<float>(i - 3) * 9.0f;  // -27 .. 18: the tails
  Tensor s = x.clone(), g = x.clone(), qg = x.clone();
  silu_(s);
  gelu_(g);
  quick_gelu_(qg);
  for (int64_t i = 0; i < x.numel(); ++i) {
    const double v = x[i];
    EXPECT_NEAR_SCALED(s[i], v / (1 + std::exp(-v)), 1e-6) << v;
    EXPECT_NEAR_SCALED(g[i], 0.5 * v * (1 + std::erf(v / std::sqrt(2.0))), 1e-6) << v;
    EXPECT_NEAR_SCALED(qg[i], v / (1 + std::exp(-1.702 * v)), 1e-6) << v;
  }
  Tensor y = geglu(x);
  ASSERT_EQ(y.shape(), (Shape{5, 19}));
  for (int64_t r = 0; r < 5; ++r)
    for (int64_t i = 0; i < 19; ++i) {
      const double h = x[r * 38 + i], gate = x[r * 38 + 19 + i];
      EXPECT_NEAR_SCALED(y[r * 19 + i], h * 0.5 * gate * (1 + std::erf(gate / std::sqrt(2.0))), 1e-6);
    }
}

// The vectorized erf behind gelu_ and geglu, against std::erf in double.
TEST(Kernels, ErfMatchesStdErf) {
  std::vector<float> in;
  for (int i = -200000; i <= 200000; ++i) in.push_back(static_cast<float>(i) * 5e-5f);  // [-10, 10], step 5e-5
  for (float v = 1e-30f; v < 1e3f; v *= 1.01f) {  // tiny to large magnitudes, both signs
    in.push_back(v);
    in.push_back(-v);
  }
  for (float v : {0.927734375f, std::nextafter(0.927734375f, 1.0f), 3.9f, 4.0f, 1e30f, FLT_MAX, FLT_MIN, 1e-45f})
    for (float sign : {1.0f, -1.0f}) in.push_back(sign * v);
  while (in.size() % simd::kWidth) in.push_back(0.0f);
  std::vector<float> out(in.size());
  for (size_t i = 0; i < in.size(); i += simd::kWidth) simd::store(&out[i], simd::erf(simd::load(&in[i])));
  double max_abs = 0, max_rel_small = 0;
  for (size_t i = 0; i < in.size(); ++i) {
    const double ref = std::erf(static_cast<double>(in[i]));
    const double err = std::fabs(out[i] - ref);
    max_abs = std::max(max_abs, err);
    // Relative error near 0, for normal results (a subnormal one has fewer bits).
    if (std::fabs(ref) >= FLT_MIN && std::fabs(in[i]) < 0.5f)
      max_rel_small = std::max(max_rel_small, err / std::fabs(ref));
  }
  if (std::getenv("SDCPU_TEST_VERBOSE"))
    std::printf("  erf: max abs error %.3g, max relative error for |x| < 0.5: %.3g\n", max_abs, max_rel_small);
  EXPECT_LE(max_abs, 1e-7);        // measured 5.5e-8
  EXPECT_LE(max_rel_small, 2e-7);  // measured 7.8e-8: erf keeps its relative accuracy toward 0

  // Special values: signed zeros stay zeros, the infinities give +-1, NaN stays NaN.
  const float specials[] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, 10.0f, -10.0f, 1e-45f};
  float sp[16] = {}, so[16];
  for (int i = 0; i < 8; ++i) sp[i] = specials[i];
  for (int i = 0; i < 16; i += simd::kWidth) simd::store(so + i, simd::erf(simd::load(sp + i)));
  EXPECT_EQ(so[0], 0.0f);
  EXPECT_FALSE(std::signbit(so[0]));
  EXPECT_EQ(so[1], 0.0f);
  EXPECT_TRUE(std::signbit(so[1]));
  EXPECT_EQ(so[2], 1.0f);
  EXPECT_EQ(so[3], -1.0f);
  EXPECT_TRUE(std::isnan(so[4]));
  EXPECT_EQ(so[5], 1.0f);
  EXPECT_EQ(so[6], -1.0f);
  EXPECT_GT(so[7], 0.0f);
}

TEST(Kernels, ChannelsLastOpsMatchDefinition) {
  // [N, H, W, C] images: the UNet's skip concatenation and the time-embedding bias, per pixel.
  Tensor x = random_tensor({2, 4, 5, 3}, 19), skip = random_tensor({2, 4, 5, 17}, 20);
  Tensor cat = concat_channels(x, skip);
  ASSERT_EQ(cat.shape(), (Shape{2, 4, 5, 20}));
  for (int64_t p = 0; p < 40; ++p)
    for (int64_t ch = 0; ch < 20; ++ch)
      ASSERT_EQ(cat[p * 20 + ch], ch < 3 ? x[p * 3 + ch] : skip[p * 17 + ch - 3]) << p << " " << ch;
  EXPECT_THROW(concat_channels(x, random_tensor({2, 5, 4, 3}, 21)), InvalidArgument);

  Tensor y = x.clone(), v = random_tensor({2, 3}, 22);
  add_channel_bias_(y, v);
  for (int64_t p = 0; p < 40; ++p)
    for (int64_t ch = 0; ch < 3; ++ch) ASSERT_EQ(y[p * 3 + ch], x[p * 3 + ch] + v[(p / 20) * 3 + ch]);
  EXPECT_THROW(add_channel_bias_(y, random_tensor({2, 4}, 23)), InvalidArgument);
}

}  // namespace
}  // namespace sdcpu
