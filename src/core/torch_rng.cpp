// torch.randn on the CPU, as PyTorch 1.13 computes it (the version the goldens come from).
//
// The chain, function by function:
//  * at::mt19937 (ATen/core/MT19937RNGEngine.h) is the reference 32-bit Mersenne Twister seeded with the low
//    32 bits of the seed by the standard 1812433253 recurrence: the same sequence as std::mt19937.
//  * CPUGeneratorImpl::random() is one engine output; random64() is (first << 32) | second.
//  * at::uniform_real_distribution<float> (ATen/core/TransformationHelper.h uniform_real) keeps the low 24
//    bits of random() and scales by 2^-24; the double version keeps the low 53 bits of random64().
//  * normal_kernel (ATen/native/cpu/DistributionKernels.cpp) sends contiguous float tensors with at least 16
//    elements to normal_fill_AVX2 (the kernel x86 wheels dispatch to) and everything smaller to a serial
//    loop over at::normal_distribution<double>, which caches the second Box-Muller value in the generator.
#include "core/torch_rng.h"

#include <cmath>
#include <cstring>
#include <numbers>
#include <optional>
#include <random>

#include "core/error.h"

namespace sdcpu {

struct TorchGenerator::State {
  // at::mt19937 and std::mt19937 are the same algorithm with the same seeding, so the output streams are
  // identical; PyTorch keeps only the low 32 bits of the seed (mt19937::init_with_uint32).
  std::mt19937 engine;
  // CPUGeneratorImpl::next_double_normal_sample_: the r*sin(theta) half of the last scalar Box-Muller pair.
  // (The float twin is only used by normal_distribution<float>, which randn never reaches.)
  std::optional<double> next_double_normal;

  explicit State(uint64_t seed) : engine(static_cast<uint32_t>(seed & 0xffffffffu)) {}

  uint32_t random() { return static_cast<uint32_t>(engine()); }
  uint64_t random64() {
    const uint64_t hi = random();
    const uint64_t lo = random();
    return (hi << 32) | lo;
  }
  // uniform_real<float>(random(), 0, 1): exact, since a 24-bit integer times 2^-24 fits a float.
  float uniform_float() { return static_cast<float>(random() & ((1u << 24) - 1)) * (1.0f / (1u << 24)); }
  double uniform_double() {
    return static_cast<double>(random64() & ((uint64_t{1} << 53) - 1)) * (1.0 / (uint64_t{1} << 53));
  }

  // at::normal_distribution<double>::operator() with mean 0, std 1 (ATen/core/DistributionsHelper.h, 1.13:
  // log(1 - u2), not the later log1p). Returns r*cos(theta) and caches r*sin(theta) for the next call.
  double normal_double() {
    if (next_double_normal) {
      const double cached = *next_double_normal;
      next_double_normal.reset();
      return cached;
    }
    const double u1 = uniform_double();
    const double u2 = uniform_double();
    const double r = std::sqrt(-2.0 * std::log(1.0 - u2));
    const double theta = 2.0 * std::numbers::pi * u1;  // c10::pi<double>
    next_double_normal = r * std::sin(theta);
    return r * std::cos(theta);
  }
};

namespace {

float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

uint32_t to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

// One lane of log256_ps from ATen/native/cpu/avx_mathfun.h (Cephes logf as a polynomial), rounding exactly
// as the shipped binary does. PyTorch is built by GCC with its default -ffp-contract=fast, so every multiply
// whose only use is an add was fused into an FMA; those fusions are spelled out as std::fma here. The
// remaining multiplies feed only multiplies, FMA operands or sqrt, so this function rounds the same whatever
// our own compiler's contraction setting is. Verified bit for bit against torch 1.13 goldens (the unfused
// polynomial differs in ~1% of values).
float cephes_log(float x) {
  // The argument is 1 - u with u in [0, 1), so always in [2^-24, 1]: normal and positive, so the
  // denormal clamp and NaN mask of the original never trigger.
  const uint32_t bits = to_bits(x);
  float e = static_cast<float>(static_cast<int32_t>(bits >> 23) - 0x7f) + 1.0f;
  x = from_bits((bits & ~0x7f800000u) | to_bits(0.5f));  // mantissa in [0.5, 1)
  // if (x < SQRTHF) { e -= 1; x = x + x - 1; } else { x = x - 1; }, in the original's operation order.
  const bool below = x < 0.707106781186547524f;
  const float tmp = below ? x : 0.0f;
  x = x - 1.0f;
  if (below) e = e - 1.0f;
  x = x + tmp;

  const float z = x * x;
  float y = 7.0376836292E-2f;
  y = std::fma(y, x, -1.1514610310E-1f);
  y = std::fma(y, x, 1.1676998740E-1f);
  y = std::fma(y, x, -1.2420140846E-1f);
  y = std::fma(y, x, 1.4249322787E-1f);
  y = std::fma(y, x, -1.6668057665E-1f);
  y = std::fma(y, x, 2.0000714765E-1f);
  y = std::fma(y, x, -2.4999993993E-1f);
  y = std::fma(y, x, 3.3333331174E-1f);
  y = y * x;
  y = std::fma(y, z, e * -2.12194440e-4f);  // y*z fused into "+ e*q1"
  y = std::fma(-z, 0.5f, y);                // "- z*0.5" (exact product, so fusing is harmless)
  x = x + y;
  return std::fma(e, 0.693359375f, x);  // "+ e*q2" (e*q2 is exact, likewise)
}

// One lane of sincos256_ps from avx_mathfun.h (Cephes sinf/cosf), with the binary's FMA contractions: the
// Cody-Waite reduction steps, both Horner chains, and the cosine's last "y*z - z*0.5" as one fused
// multiply-subtract (fusing the other product instead changes ~0.1% of values).
void cephes_sincos(float theta, float* sin_out, float* cos_out) {
  uint32_t sign_sin = to_bits(theta) & 0x80000000u;
  float x = from_bits(to_bits(theta) & 0x7fffffffu);
  // Octant j = (trunc(x * 4/pi) + 1) & ~1, as _mm256_cvttps_epi32 truncates.
  int32_t j = static_cast<int32_t>(x * 1.27323954473516f);
  j = (j + 1) & ~1;
  const float yj = static_cast<float>(j);
  sign_sin ^= static_cast<uint32_t>(j & 4) << 29;
  const uint32_t sign_cos = static_cast<uint32_t>(~(j - 2) & 4) << 29;
  const bool sine_poly_for_sin = (j & 2) == 0;

  x = std::fma(yj, -0.78515625f, x);
  x = std::fma(yj, -2.4187564849853515625e-4f, x);
  x = std::fma(yj, -3.77489497744594108e-8f, x);

  const float z = x * x;
  float yc = std::fma(2.443315711809948E-005f, z, -1.388731625493765E-003f);
  yc = std::fma(yc, z, 4.166664568298827E-002f);
  yc = yc * z;
  yc = std::fma(yc, z, -(z * 0.5f));
  yc = yc + 1.0f;

  float ys = std::fma(-1.9515295891E-4f, z, 8.3321608736E-3f);
  ys = std::fma(ys, z, -1.6666654611E-1f);
  ys = ys * z;
  ys = std::fma(ys, x, x);

  const float s = sine_poly_for_sin ? ys : yc;
  const float c = sine_poly_for_sin ? yc : ys;
  *sin_out = from_bits(to_bits(s) ^ sign_sin);
  *cos_out = from_bits(to_bits(c) ^ sign_cos);
}

// normal_fill_16_AVX2: Box-Muller on 16 uniforms in place; lane j pairs u1 = 1 - data[j] (radius) with
// u2 = data[j + 8] (angle); cos goes to j, sin to j + 8. The final fmadd(n, std=1, mean=0) is exact.
void normal_fill_16(float* data) {
  const float two_pi = static_cast<float>(2.0 * std::numbers::pi);  // _mm256_set1_ps(2.0f * c10::pi<double>)
  for (int j = 0; j < 8; ++j) {
    const float u1 = 1.0f - data[j];  // [0, 1) -> (0, 1] for the log
    const float u2 = data[j + 8];
    const float radius = std::sqrt(-2.0f * cephes_log(u1));
    float s, c;
    cephes_sincos(two_pi * u2, &s, &c);
    data[j] = radius * c;
    data[j + 8] = radius * s;
  }
}

}  // namespace

TorchGenerator::TorchGenerator(uint64_t seed) : state_(std::make_shared<State>(seed)) {}

Tensor TorchGenerator::randn(const Shape& shape) {
  Tensor out(shape);
  const int64_t n = out.numel();
  float* data = out.data();
  State& g = *state_;
  if (n >= 16) {
    // normal_fill_AVX2: all uniforms first, then the transform in blocks of 16. A tail that is not a whole
    // block is redone by drawing 16 fresh uniforms over the last 16 elements (overwriting already
    // transformed values), so the stream advances by n + 16 draws in that case. The scalar cache is
    // neither used nor cleared here.
    for (int64_t i = 0; i < n; ++i) data[i] = g.uniform_float();
    for (int64_t i = 0; i + 16 <= n; i += 16) normal_fill_16(data + i);
    if (n % 16 != 0) {
      float* tail = data + n - 16;
      for (int i = 0; i < 16; ++i) tail[i] = g.uniform_float();
      normal_fill_16(tail);
    }
  } else {
    // The serial normal_kernel loop: one at::normal_distribution<double> sample per element, in order.
    for (int64_t i = 0; i < n; ++i) data[i] = static_cast<float>(g.normal_double());
  }
  return out;
}

std::vector<int64_t> TorchGenerator::randint(int64_t high, int64_t count) {
  if (high <= 0 || high >= (int64_t{1} << 32) || count < 0)
    throw InvalidArgument("randint: high must be in [1, 2^32) and count not negative");
  std::vector<int64_t> out(static_cast<size_t>(count));
  for (auto& v : out) v = static_cast<int64_t>(state_->random() % static_cast<uint64_t>(high));
  return out;
}

}  // namespace sdcpu
