// The fused attention kernel (src/kernels/attention.cpp) against a scalar double-precision reference, over the
// shapes Stable Diffusion uses and the awkward ones (head dims that are not a multiple of the SIMD width, tails
// of the query and key blocks, single tokens, causal masks with Lq != Lk); and the accuracy of the vectorized
// exp its softmax uses (src/kernels/vector_math.h).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "kernels/attention.h"
#include "kernels/attention_microkernels_bf16.h"
#include "kernels/vector_math.h"
#include "random_tensor.h"
#include "test_support.h"

namespace sdcpu {
namespace {

using testing::random_tensor;

// softmax(q k^T / sqrt(D) + mask) v per head, in double, one query at a time: the definition, nothing clever.
Tensor attention_reference(const Tensor& q, const Tensor& k, const Tensor& v, int heads, bool causal) {
  const int64_t bsz = q.dim(0), lq = q.dim(1), lk = k.dim(1), width = q.dim(2), d = width / heads;
  Tensor out(q.shape());
  std::vector<double> s(lk), acc(d);
  for (int64_t b = 0; b < bsz; ++b)
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < lq; ++i) {
        const float* qi = q.data() + (b * lq + i) * width + h * d;
        double mx = -INFINITY;
        for (int64_t j = 0; j < lk; ++j) {
          const float* kj = k.data() + (b * lk + j) * width + h * d;
          double dot = 0;
          for (int64_t e = 0; e < d; ++e) dot += static_cast<double>(qi[e]) * kj[e];
          s[j] = (causal && j > i) ? -INFINITY : dot / std::sqrt(static_cast<double>(d));
          mx = std::max(mx, s[j]);
        }
        double sum = 0;
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int64_t j = 0; j < lk; ++j) {
          const double p = std::exp(s[j] - mx);
          sum += p;
          const float* vj = v.data() + (b * lk + j) * width + h * d;
          for (int64_t e = 0; e < d; ++e) acc[e] += p * vj[e];
        }
        for (int64_t e = 0; e < d; ++e) out[(b * lq + i) * width + h * d + e] = static_cast<float>(acc[e] / sum);
      }
  return out;
}

struct Case {
  int64_t batch, lq, lk, heads, d;
  bool causal;
  float scale = 1.0f;  // input standard deviation: larger makes the softmax peakier
};

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  const Case& c = info.param;
  char name[128];
  std::snprintf(name, sizeof(name), "b%lld_q%lld_k%lld_h%lld_d%lld%s%s", static_cast<long long>(c.batch),
                static_cast<long long>(c.lq), static_cast<long long>(c.lk), static_cast<long long>(c.heads),
                static_cast<long long>(c.d), c.causal ? "_causal" : "", c.scale != 1.0f ? "_peaky" : "");
  return name;
}

class AttentionShapes : public ::testing::TestWithParam<Case> {};

TEST_P(AttentionShapes, MatchesReference) {
  const Case c = GetParam();
  const uint32_t seed = static_cast<uint32_t>(c.lq * 131 + c.lk * 31 + c.d * 7 + c.heads);
  const Tensor q = random_tensor({c.batch, c.lq, c.heads * c.d}, seed, c.scale);
  const Tensor k = random_tensor({c.batch, c.lk, c.heads * c.d}, seed + 1, c.scale);
  const Tensor v = random_tensor({c.batch, c.lk, c.heads * c.d}, seed + 2);
  const Tensor got = attention(q, k, v, static_cast<int>(c.heads), c.causal);
  EXPECT_TENSOR_NEAR(got, attention_reference(q, k, v, static_cast<int>(c.heads), c.causal), 1e-5);
}

// Stable Diffusion's shapes and the awkward ones, for both compute types.
const Case kCases[] = {
    // Stable Diffusion's head dims: UNet levels (40, 80, 160), CLIP (64), the VAE mid-block (512).
    Case{2, 257, 257, 8, 40, false}, Case{2, 100, 77, 8, 40, false}, Case{1, 257, 100, 2, 80, false},
    Case{2, 77, 77, 4, 80, false}, Case{2, 64, 64, 8, 160, false}, Case{1, 100, 77, 3, 160, false},
    Case{2, 77, 77, 12, 64, true}, Case{1, 257, 257, 1, 512, false}, Case{1, 77, 100, 1, 512, false},
    // Head dims that are no multiple of anything, down to 1.
    Case{2, 100, 257, 3, 3, false}, Case{1, 77, 77, 2, 1, false}, Case{1, 100, 100, 2, 17, true},
    // Single tokens on either side, and block tails of one.
    Case{2, 1, 77, 8, 40, false}, Case{2, 77, 1, 8, 40, false}, Case{1, 1, 1, 1, 64, false}, Case{1, 1, 1, 1, 64, true},
    Case{1, 65, 97, 2, 40, false}, Case{1, 193, 193, 1, 40, true},
    // Causal with Lq != Lk (query i sees keys j <= i, as torch's is_causal).
    Case{1, 100, 77, 2, 64, true}, Case{1, 77, 257, 2, 64, true},
    // Peaky softmax: scores of many standard deviations, so the running max changes often between blocks.
    Case{1, 257, 257, 2, 40, false, 3.0f}, Case{1, 100, 100, 2, 64, true, 3.0f},
    // A full-size UNet first level self-attention, one head (the kernel is per head anyway).
    Case{1, 4100, 4100, 1, 40, false}};

INSTANTIATE_TEST_SUITE_P(Kernels, AttentionShapes, ::testing::ValuesIn(kCases), case_name);

// A later key block whose scores exceed everything before it forces the online softmax to rescale what was
// accumulated (FlashAttention's diag(e^(m - m')) step): keys grow with their index.
TEST(Kernels, AttentionRescalesWhenMaxGrows) {
  Tensor q = random_tensor({1, 70, 32}, 41), k = random_tensor({1, 500, 32}, 42), v = random_tensor({1, 500, 32}, 43);
  for (int64_t j = 0; j < 500; ++j)
    for (int64_t e = 0; e < 32; ++e) k[j * 32 + e] *= 0.02f * static_cast<float>(j);
  EXPECT_TENSOR_NEAR(attention(q, k, v, 2), attention_reference(q, k, v, 2, false), 1e-5);
}

// Queries far apart in magnitude within one block: per-lane statistics must not leak between queries.
TEST(Kernels, AttentionRowsAreIndependent) {
  Tensor q = random_tensor({1, 64, 40}, 51), k = random_tensor({1, 200, 40}, 52), v = random_tensor({1, 200, 40}, 53);
  for (int64_t i = 0; i < 64; ++i)
    for (int64_t e = 0; e < 40; ++e) q[i * 40 + e] *= (i % 2) ? 10.0f : 0.01f;
  EXPECT_TENSOR_NEAR(attention(q, k, v, 1), attention_reference(q, k, v, 1, false), 1e-5);
}

TEST(Kernels, AttentionRejectsBadShapes) {
  const Tensor q({1, 4, 8}), k({1, 5, 8}), v({1, 6, 8});
  EXPECT_ANY_THROW(attention(q, k, v, 2));
  EXPECT_ANY_THROW(attention(q, k, k, 3));
}

// ---- ComputeType::bf16 ----
//
// The tolerance. Rounding to bf16 (8-bit mantissa, to nearest even) has a relative error of at most u = 2^-9 ~
// 0.002 per value. To first order: a score s = q.k / sqrt(D) moves by at most ds = 2u sum_e |q_e k_e| / sqrt(D)
// (Q and K rounded); scores moved by at most ds move the softmax weights by a relative e^(2 ds) - 1 ~ 2 ds, and
// the P rounding by 2u more (the row sum adds the rounded P, so the weights still sum to 1); the output, a convex
// combination of the values, then moves by at most (2 ds + 2u) max|v - o|, plus u max|v| for the V rounding.
// That worst case (crude_bf16_bound below) is 0.5 - 1 of the output scale for unit-variance inputs at SD's head
// dims, but the rounding errors are independent and unbiased, so they add in quadrature rather than linearly:
// measured, the error is 2e-3 - 5e-3 of the output scale. The part due to the Q and K rounding grows with the
// spread of the scores (ds is relative to |s|): with sigma_s the scores' standard deviation (1 for unit-variance
// q and k, 9 for the "peaky" cases, whose inputs have a standard deviation of 3) the error measures about
// u (2 + 0.7 sigma_s). The bound: max abs error <= kBf16Tol (1 + sigma_s) / 2 of max(1, max|ref|), i.e. 2e-2
// (10 u) at sigma_s = 1. The worst measured case stays 3.5x or more inside it (SDCPU_TEST_VERBOSE=1 prints the
// errors), while any layout or pairing mistake errs by O(1).
constexpr double kBf16Tol = 2e-2;
double bf16_tolerance(float input_scale) { return kBf16Tol * (1.0 + input_scale * input_scale) / 2.0; }

class AttentionShapesBf16 : public ::testing::TestWithParam<Case> {};

TEST_P(AttentionShapesBf16, MatchesReference) {
  const Case c = GetParam();
  const uint32_t seed = static_cast<uint32_t>(c.lq * 131 + c.lk * 31 + c.d * 7 + c.heads);
  const Tensor q = random_tensor({c.batch, c.lq, c.heads * c.d}, seed, c.scale);
  const Tensor k = random_tensor({c.batch, c.lk, c.heads * c.d}, seed + 1, c.scale);
  const Tensor v = random_tensor({c.batch, c.lk, c.heads * c.d}, seed + 2);
  const Tensor got = attention(q, k, v, static_cast<int>(c.heads), c.causal, ComputeType::bf16);
  EXPECT_TENSOR_NEAR(got, attention_reference(q, k, v, static_cast<int>(c.heads), c.causal), bf16_tolerance(c.scale));
}

INSTANTIATE_TEST_SUITE_P(Kernels, AttentionShapesBf16, ::testing::ValuesIn(kCases), case_name);

// fp32 -> bf16 -> fp32, rounding to nearest even (finite x): what vcvtne2ps2bf16 computes.
using testing::round_to_bf16;

// attention_reference with the bf16 path's roundings mirrored: Q scaled in fp32 by log2(e)/sqrt(D) (scores in
// log2 units) then rounded, K and V rounded, the probabilities 2^(s - max) rounded before both the sum and the
// product with V; everything else in double. Equal to the kernel's bf16 result up to fp32 accumulation, its exp2's
// 2.7e-6 and rare one-ulp rounding flips of P, but only while one key block holds every key (Lk <= 96): beyond,
// the kernel rounds P relative to a running maximum.
Tensor attention_reference_bf16(const Tensor& q, const Tensor& k, const Tensor& v, int heads, bool causal) {
  const int64_t bsz = q.dim(0), lq = q.dim(1), lk = k.dim(1), width = q.dim(2), d = width / heads;
  const float scale = static_cast<float>(1.4426950408889634 / std::sqrt(static_cast<double>(d)));
  Tensor out(q.shape());
  std::vector<double> s(lk), acc(d);
  for (int64_t b = 0; b < bsz; ++b)
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < lq; ++i) {
        const float* qi = q.data() + (b * lq + i) * width + h * d;
        double mx = -INFINITY;
        for (int64_t j = 0; j < lk; ++j) {
          const float* kj = k.data() + (b * lk + j) * width + h * d;
          double dot = 0;
          for (int64_t e = 0; e < d; ++e)
            dot += static_cast<double>(round_to_bf16(qi[e] * scale)) * static_cast<double>(round_to_bf16(kj[e]));
          s[j] = (causal && j > i) ? -INFINITY : dot;
          mx = std::max(mx, s[j]);
        }
        double sum = 0;
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int64_t j = 0; j < lk; ++j) {
          const double p = round_to_bf16(static_cast<float>(std::exp2(s[j] - mx)));
          sum += p;
          const float* vj = v.data() + (b * lk + j) * width + h * d;
          for (int64_t e = 0; e < d; ++e) acc[e] += p * static_cast<double>(round_to_bf16(vj[e]));
        }
        for (int64_t e = 0; e < d; ++e) out[(b * lq + i) * width + h * d + e] = static_cast<float>(acc[e] / sum);
      }
  return out;
}

// max |a - b| / max(1, max |b|)
double relative_error(const Tensor& a, const Tensor& b) {
  const auto diff = testing::compare(a, b);
  return diff.max_abs / std::max(1.0, diff.max_ref);
}

// The root mean square of a - b over max(1, max |b|).
double relative_rms_error(const Tensor& a, const Tensor& b) {
  double sq = 0;
  for (int64_t i = 0; i < a.numel(); ++i) sq += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
  return std::sqrt(sq / static_cast<double>(std::max<int64_t>(1, a.numel()))) /
         std::max(1.0, testing::compare(b, b).max_ref);
}

// The first-order worst case of the header comment, relative to max(1, max|ref|): (2 ds + 2u) max|v - o| + u max|v|
// with ds = 2u max_ij sum_e |q_ie k_je| / sqrt(D), bounding |v - o| by max v - min v.
double crude_bf16_bound(const Tensor& q, const Tensor& k, const Tensor& v, int heads, const Tensor& ref) {
  const double u = std::ldexp(1.0, -9);
  const int64_t bsz = q.dim(0), lq = q.dim(1), lk = k.dim(1), width = q.dim(2), d = width / heads;
  double a = 0;
  for (int64_t b = 0; b < bsz; ++b)
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < lq; ++i)
        for (int64_t j = 0; j < lk; ++j) {
          double dot = 0;
          for (int64_t e = 0; e < d; ++e)
            dot += std::abs(static_cast<double>(q[(b * lq + i) * width + h * d + e]) *
                            k[(b * lk + j) * width + h * d + e]);
          a = std::max(a, dot / std::sqrt(static_cast<double>(d)));
        }
  double vmin = INFINITY, vmax = -INFINITY;
  for (int64_t i = 0; i < v.numel(); ++i) vmin = std::min<double>(vmin, v[i]), vmax = std::max<double>(vmax, v[i]);
  const double bound = (4 * u * a + 2 * u) * (vmax - vmin) + u * std::max(vmax, -vmin);
  return bound / std::max(1.0, testing::compare(ref, ref).max_ref);
}

// The bf16 path is taken where the CPU has it, and rounds exactly as documented. Against the reference that
// mirrors its roundings it agrees to fp32 accuracy, except where the kernel's fp32 score and exp land a
// probability on the other side of a bf16 rounding boundary than the double reference does (a one-ulp flip of
// one P, 2^-8 of one weight, about one P in a thousand): so the comparison is the RMS error, which such rare
// flips barely move (~1e-5), against ~1e-3 from the exact reference. A kernel that kept any of Q, K, V, P in
// fp32, rounded Q before its 1/sqrt(D) scale, or truncated instead of rounding to nearest would be off by the
// bf16 error proper everywhere and fail the first check; one that ran fp32 throughout, the second. Lk <= 96
// (one key block): cross-attention's 77 CLIP tokens, CLIP's causal attention, odd and wide head dims.
TEST(Kernels, AttentionBf16RoundsAsDocumented) {
  if (!attention_bf16_native()) GTEST_SKIP() << "no AVX512_BF16 in this build: bf16 runs the fp32 kernel";
  const Case cases[] = {Case{2, 100, 77, 8, 40, false}, Case{1, 130, 77, 4, 80, false}, Case{1, 70, 77, 3, 160, false},
                        Case{2, 77, 77, 12, 64, true},  Case{1, 100, 95, 2, 17, false}, Case{1, 64, 77, 1, 512, false}};
  for (const Case& c : cases) {
    const Tensor q = random_tensor({c.batch, c.lq, c.heads * c.d}, 61);
    const Tensor k = random_tensor({c.batch, c.lk, c.heads * c.d}, 62);
    const Tensor v = random_tensor({c.batch, c.lk, c.heads * c.d}, 63);
    const int heads = static_cast<int>(c.heads);
    const Tensor got = attention(q, k, v, heads, c.causal, ComputeType::bf16);
    const Tensor mirror = attention_reference_bf16(q, k, v, heads, c.causal);
    const Tensor exact = attention_reference(q, k, v, heads, c.causal);
    const double vs_mirror = relative_rms_error(got, mirror), vs_exact = relative_rms_error(got, exact);
    if (std::getenv("SDCPU_TEST_VERBOSE"))
      std::printf(
          "  d %lld: RMS error %.3g against the bf16-mirroring reference (max %.3g), %.3g against the exact "
          "one (max %.3g)\n",
          static_cast<long long>(c.d), vs_mirror, relative_error(got, mirror), vs_exact, relative_error(got, exact));
    EXPECT_LE(vs_mirror, 1e-4) << "d " << c.d;
    EXPECT_GE(vs_exact, 10 * vs_mirror) << "d " << c.d;
  }
}

// At the SD shapes (several key blocks, rescaling): bf16 differs from fp32 by the bf16 rounding (not by fp32's
// 1e-6), and stays well inside both the stated tolerance and the crude first-order worst case: within a third of
// each, so a kernel that loses accuracy somewhere (a missed rounding mode, fp32 sums dropped) shows up before it
// reaches the tolerance.
TEST(Kernels, AttentionBf16DiffersFromF32WithinBounds) {
  const Case cases[] = {Case{1, 300, 300, 2, 40, false}, Case{1, 200, 200, 2, 80, false},
                        Case{1, 130, 130, 1, 160, false}, Case{1, 100, 150, 1, 512, false},
                        Case{1, 200, 200, 2, 64, true, 3.0f}};
  for (const Case& c : cases) {
    const Tensor q = random_tensor({c.batch, c.lq, c.heads * c.d}, 71, c.scale);
    const Tensor k = random_tensor({c.batch, c.lk, c.heads * c.d}, 72, c.scale);
    const Tensor v = random_tensor({c.batch, c.lk, c.heads * c.d}, 73);
    const int heads = static_cast<int>(c.heads);
    const Tensor ref = attention_reference(q, k, v, heads, c.causal);
    const Tensor f32 = attention(q, k, v, heads, c.causal);
    const Tensor bf16 = attention(q, k, v, heads, c.causal, ComputeType::bf16);
    const double err = relative_error(bf16, ref), from_f32 = relative_error(bf16, f32);
    const double crude = crude_bf16_bound(q, k, v, heads, ref);
    if (std::getenv("SDCPU_TEST_VERBOSE"))
      std::printf("  d %lld: bf16 error %.3g (fp32 %.3g), bf16 - fp32 %.3g; tolerance %.3g, crude bound %.3g\n",
                  static_cast<long long>(c.d), err, relative_error(f32, ref), from_f32, bf16_tolerance(c.scale), crude);
    if (attention_bf16_native()) {
      EXPECT_GE(from_f32, 1e-4) << "d " << c.d << ": the bf16 path was not taken";
    }
    EXPECT_LE(err, bf16_tolerance(c.scale) / 3) << "d " << c.d;
    EXPECT_LE(err, crude / 3) << "d " << c.d;
  }
}

// The float with bit pattern u.
float float_from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Applies simd::exp to xs, a vector at a time.
std::vector<float> simd_exp(const std::vector<float>& xs) {
  std::vector<float> padded(xs), ys(xs.size() + simd::kWidth);
  padded.resize(xs.size() + simd::kWidth, 0.0f);
  for (size_t i = 0; i < xs.size(); i += simd::kWidth)
    simd::store(ys.data() + i, simd::exp(simd::load(padded.data() + i)));
  ys.resize(xs.size());
  return ys;
}

// Error of y against the exact e^x, in units in the last place of the exact value.
double ulp_error(float x, float y) {
  const double exact = std::exp(static_cast<double>(x));
  const double ulp = std::ldexp(1.0, std::ilogb(exact) - 23);
  return std::abs(static_cast<double>(y) - exact) / ulp;
}

// The documented bound: at most 2 ulp on [-87.33, 88]; 0 below ln(FLT_MIN). Every float bit pattern in the
// range with a stride (about 14 million values), plus every float around the reduction boundaries.
TEST(Kernels, VectorExpWithinTwoUlp) {
  std::vector<float> xs;
  auto bits_of = [](float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
  };
  // Negative floats: bit patterns grow with magnitude from 0x80000000 (-0) to -87.33.
  for (uint32_t u = bits_of(-0.0f); u <= bits_of(-87.33654f); u += 193) xs.push_back(float_from_bits(u));
  for (uint32_t u = 0; u <= bits_of(88.0f); u += 193) xs.push_back(float_from_bits(u));
  // Every float around +-ln2/2 = +-0.3466, where the reduction's n flips between 0 and +-1.
  for (float x = 0.33f; x <= 0.36f; x = std::nextafter(x, 1.0f)) xs.push_back(x), xs.push_back(-x);
  const std::vector<float> ys = simd_exp(xs);
  double worst = 0;
  float worst_x = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    const double err = ulp_error(xs[i], ys[i]);
    if (err > worst) worst = err, worst_x = xs[i];
  }
  std::printf("  simd::exp (%s): max error %.3f ulp at x = %.9g over %zu values\n", simd::kIsa, worst, worst_x,
              xs.size());
  EXPECT_LE(worst, 2.0) << "at x = " << worst_x;
}

TEST(Kernels, VectorExpSpecialValues) {
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<float> xs = {0.0f, -0.0f, 1.0f, -1.0f, -inf, -87.4f, -100.0f, -1e30f, std::nanf("")};
  const std::vector<float> ys = simd_exp(xs);
  EXPECT_EQ(ys[0], 1.0f);
  EXPECT_EQ(ys[1], 1.0f);
  EXPECT_LE(ulp_error(1.0f, ys[2]), 2.0);
  EXPECT_LE(ulp_error(-1.0f, ys[3]), 2.0);
  for (int i = 4; i < 8; ++i) EXPECT_EQ(ys[i], 0.0f) << "x = " << xs[i];  // below ln(FLT_MIN): flushed to 0
  EXPECT_TRUE(std::isnan(ys[8]));
}

// The fp32 softmax's simd::exp2_nonpositive: within 2 ulp of the exact 2^t over every float of [-126, 0] with a
// stride (about 11 million values) and every float around the rounding boundaries t = -0.5 - k; exactly 0 below
// -126 and at -inf; NaN stays NaN.
TEST(Kernels, VectorExp2WithinTwoUlp) {
  std::vector<float> ts;
  for (uint32_t u = 0x80000000u; float_from_bits(u) >= -126.0f; u += 97) ts.push_back(float_from_bits(u));
  for (float t = -0.49f; t >= -0.51f; t = std::nextafter(t, -1.0f)) ts.push_back(t), ts.push_back(t - 7.0f);
  ts.push_back(-126.0f);
  const size_t count = ts.size();
  ts.resize((ts.size() + simd::kWidth - 1) / simd::kWidth * simd::kWidth, 0.0f);
  std::vector<float> ys(ts.size());
  for (size_t i = 0; i < ts.size(); i += simd::kWidth)
    simd::store(ys.data() + i, simd::exp2_nonpositive(simd::load(ts.data() + i)));
  double worst = 0;
  float worst_t = 0;
  for (size_t i = 0; i < count; ++i) {
    const double exact = std::exp2(static_cast<double>(ts[i]));
    const double err = std::abs(ys[i] - exact) / std::ldexp(1.0, std::ilogb(exact) - 23);
    if (err > worst) worst = err, worst_t = ts[i];
  }
  std::printf("  simd::exp2_nonpositive (%s): max error %.3f ulp at t = %.9g over %zu values\n", simd::kIsa, worst,
              worst_t, count);
  EXPECT_LE(worst, 2.0) << "at t = " << worst_t;
  std::vector<float> special = {-126.5f, -1e30f, -std::numeric_limits<float>::infinity(), std::nanf(""), 0.0f, -1.0f};
  special.resize(std::max<size_t>(special.size(), simd::kWidth), 0.0f);
  std::vector<float> out(special.size());
  for (size_t i = 0; i < special.size(); i += simd::kWidth)
    simd::store(out.data() + i, simd::exp2_nonpositive(simd::load(special.data() + i)));
  EXPECT_EQ(out[0], 0.0f);
  EXPECT_EQ(out[1], 0.0f);
  EXPECT_EQ(out[2], 0.0f);
  EXPECT_TRUE(std::isnan(out[3]));
  EXPECT_EQ(out[4], 1.0f);
  EXPECT_EQ(out[5], 0.5f);
}

#if defined(__AVX512BF16__)
// The bf16 softmax's 2^t (attention_microkernels_bf16.h): within 3e-6 relative (2.7e-6 measured) of the exact value
// over every float bit pattern of [-126, 0] with a stride (normal results), and the subnormal results' rounding on top
// below; exactly 0 at -150, -1e30 and -inf; NaN stays NaN.
TEST(Kernels, Bf16SoftmaxExp2Within3e6) {
  std::vector<float> ts;
  for (uint32_t u = 0x80000000u; float_from_bits(u) >= -150.0f; u += 97) ts.push_back(float_from_bits(u));
  ts.resize((ts.size() + 15) / 16 * 16, 0.0f);
  double worst = 0;
  float worst_t = 0;
  for (size_t i = 0; i < ts.size(); i += 16) {
    float out[16];
    _mm512_storeu_ps(out, attention_bf16_detail::exp2_softmax(_mm512_loadu_ps(ts.data() + i)));
    for (int l = 0; l < 16; ++l) {
      const double exact = std::exp2(static_cast<double>(ts[i + l]));
      const double err = std::abs(out[l] - exact) / exact;
      if (ts[i + l] < -126.0f) {  // a subnormal result: its rounding adds up to half of 2^-149
        EXPECT_LE(std::abs(out[l] - exact), 3e-6 * exact + 0x1p-150) << "t = " << ts[i + l];
        continue;
      }
      if (err > worst) worst = err, worst_t = ts[i + l];
    }
  }
  std::printf("  exp2_softmax: max relative error %.3g at t = %.9g over %zu values\n", worst, worst_t, ts.size());
  EXPECT_LE(worst, 3e-6) << "at t = " << worst_t;
  float special[16] = {-150.0f, -1e30f, -std::numeric_limits<float>::infinity(), std::nanf(""), 0.0f};
  _mm512_storeu_ps(special, attention_bf16_detail::exp2_softmax(_mm512_loadu_ps(special)));
  EXPECT_EQ(special[0], 0.0f);
  EXPECT_EQ(special[1], 0.0f);
  EXPECT_EQ(special[2], 0.0f);
  EXPECT_TRUE(std::isnan(special[3]));
  EXPECT_NEAR(special[4], 1.0f, 3e-6);
}
#endif

}  // namespace
}  // namespace sdcpu
