// Every kernel against a plain scalar reference written straight from the PyTorch definition.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "kernels/activations.h"
#include "kernels/attention.h"
#include "kernels/conv2d.h"
#include "kernels/linear.h"
#include "kernels/norms.h"
#include "kernels/tensor_ops.h"
#include "test_support.h"

namespace sdcpu {
namespace {

Tensor random_tensor(Shape shape, uint32_t seed, float scale = 1.0f) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  Tensor t(std::move(shape));
  for (int64_t i = 0; i < t.numel(); ++i) t[i] = dist(gen);
  return t;
}

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

TEST(Kernels, GroupNormMatchesReference) {
  Tensor x = random_tensor({2, 8, 5, 3}, 7, 3.0f), g = random_tensor({8}, 8), b = random_tensor({8}, 9);
  for (bool silu : {false, true}) {
    Tensor y = group_norm(x, 4, g, b, 1e-5f, silu);
    Tensor ref(x.shape());
    for (int64_t n = 0; n < 2; ++n)
      for (int64_t grp = 0; grp < 4; ++grp) {
        double mean = 0, var = 0;
        const int64_t base = (n * 8 + grp * 2) * 15;
        for (int64_t i = 0; i < 30; ++i) mean += x[base + i];
        mean /= 30;
        for (int64_t i = 0; i < 30; ++i) var += (x[base + i] - mean) * (x[base + i] - mean);
        var /= 30;
        for (int64_t i = 0; i < 30; ++i) {
          const int64_t ch = grp * 2 + i / 15;
          double v = (x[base + i] - mean) / std::sqrt(var + 1e-5) * g[ch] + b[ch];
          if (silu) v = v / (1 + std::exp(-v));
          ref[base + i] = static_cast<float>(v);
        }
      }
    EXPECT_TENSOR_NEAR(y, ref, 1e-5);
  }
}

TEST(Kernels, LayerNormMatchesReference) {
  Tensor x = random_tensor({3, 10}, 10, 2.0f), g = random_tensor({10}, 11), b = random_tensor({10}, 12);
  Tensor y = layer_norm(x, g, b, 1e-5f), ref(x.shape());
  for (int64_t r = 0; r < 3; ++r) {
    double mean = 0, var = 0;
    for (int64_t i = 0; i < 10; ++i) mean += x[r * 10 + i];
    mean /= 10;
    for (int64_t i = 0; i < 10; ++i) var += (x[r * 10 + i] - mean) * (x[r * 10 + i] - mean);
    var /= 10;
    for (int64_t i = 0; i < 10; ++i)
      ref[r * 10 + i] = static_cast<float>((x[r * 10 + i] - mean) / std::sqrt(var + 1e-5) * g[i] + b[i]);
  }
  EXPECT_TENSOR_NEAR(y, ref, 1e-5);
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

TEST(Kernels, ActivationsMatchDefinitions) {
  Tensor x = random_tensor({4, 6}, 18, 3.0f);
  Tensor s = x.clone(), g = x.clone(), qg = x.clone();
  silu_(s);
  gelu_(g);
  quick_gelu_(qg);
  for (int64_t i = 0; i < x.numel(); ++i) {
    const double v = x[i];
    EXPECT_NEAR(s[i], v / (1 + std::exp(-v)), 1e-5);
    EXPECT_NEAR(g[i], 0.5 * v * (1 + std::erf(v / std::sqrt(2.0))), 1e-5);
    EXPECT_NEAR(qg[i], v / (1 + std::exp(-1.702 * v)), 1e-5);
  }
  Tensor y = geglu(x);
  ASSERT_EQ(y.shape(), (Shape{4, 3}));
  for (int64_t r = 0; r < 4; ++r)
    for (int64_t i = 0; i < 3; ++i) {
      const double h = x[r * 6 + i], gate = x[r * 6 + 3 + i];
      EXPECT_NEAR(y[r * 3 + i], h * 0.5 * gate * (1 + std::erf(gate / std::sqrt(2.0))), 1e-5);
    }
}

TEST(Kernels, LayoutOpsRoundTrip) {
  Tensor x = random_tensor({2, 3, 4, 5}, 19);
  Tensor nlc = nchw_to_nlc(x);
  EXPECT_EQ(nlc[(1 * 20 + 7) * 3 + 2], x[((1 * 3 + 2) * 4 + 1) * 5 + 2]);
  EXPECT_EQ(nlc_to_nchw(nlc, 4, 5).to_vector(), x.to_vector());
  Tensor up = upsample_nearest_2x(x);
  ASSERT_EQ(up.shape(), (Shape{2, 3, 8, 10}));
  EXPECT_EQ(up[((1 * 3 + 2) * 8 + 5) * 10 + 7], x[((1 * 3 + 2) * 4 + 2) * 5 + 3]);
  Tensor cat = concat_channels(x, random_tensor({2, 1, 4, 5}, 20));
  ASSERT_EQ(cat.shape(), (Shape{2, 4, 4, 5}));
  EXPECT_EQ(cat[(1 * 4 + 2) * 20 + 3], x[(1 * 3 + 2) * 20 + 3]);
}

}  // namespace
}  // namespace sdcpu
