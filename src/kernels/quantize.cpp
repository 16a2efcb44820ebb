#include "kernels/quantize.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/vector_math.h"

namespace sdcpu {

float max_abs(const float* x, int64_t n) {
  // Every int8 product's input passes through here once per call, so it must run at memory speed: vectorized
  // blocks, one per thread at a time. max(|x|, m) keeps m where |x| is NaN (MAXPS returns its second operand);
  // max is associative, so the blocks' maxima combine in any order to the same value.
  constexpr int64_t kBlock = 16384;
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  float result = 0.0f;
#pragma omp parallel for reduction(max : result) schedule(static) if (blocks > 4)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t begin = b * kBlock, end = std::min(n, begin + kBlock);
    simd::Vec m = simd::zero();
    int64_t i = begin;
    for (; i + simd::kWidth <= end; i += simd::kWidth) m = simd::max(simd::abs(simd::load(x + i)), m);
    if (i < end) m = simd::max(simd::abs(simd::load_partial(x + i, static_cast<int>(end - i))), m);
    alignas(64) float lanes[simd::kWidth];
    simd::store(lanes, m);
    for (float v : lanes) result = std::max(result, v);
  }
  return result;
}

float int8_scale(float max_abs) {
  if (!std::isfinite(max_abs)) return std::numeric_limits<float>::quiet_NaN();
  return max_abs > 0.0f ? max_abs / 127.0f : 1.0f;
}

std::vector<float> int8_row_scales(const float* w, int64_t rows, int64_t cols) {
  std::vector<float> scales(rows);
  for (int64_t r = 0; r < rows; ++r) {
    float m = 0.0f;
    for (int64_t c = 0; c < cols; ++c) m = std::fmax(m, std::fabs(w[r * cols + c]));
    scales[r] = int8_scale(m);
  }
  return scales;
}

}  // namespace sdcpu
