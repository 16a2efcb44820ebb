#include "kernels/quantize.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace sdcpu {

float max_abs(const float* x, int64_t n) {
  float result = 0.0f;
  // fmax skips NaN; max is associative, so the threads' partial maxima combine in any order to the same value.
#pragma omp parallel for reduction(max : result) schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) result = std::fmax(result, std::fabs(x[i]));
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
