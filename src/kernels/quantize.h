// Symmetric int8 quantization, the scales behind ComputeType::int8 (core/compute_type.h): a value x is stored as
// q = round(x / scale) in [-127, 127] with scale = max|x| / 127 over its group, so the largest magnitude maps to 127
// and zero stays exactly zero (no zero point). Weights are grouped per output channel (their scales are fixed at
// load), activations per tensor (their scale is computed from each input as it arrives). Rounding is to nearest,
// ties to even, as oneDNN's reorders round.
#pragma once
#include <cstdint>
#include <vector>

namespace sdcpu {

// max |x[i]| over n values (0 for n = 0), vectorized and threaded. NaN values are skipped; an infinity gives
// infinity.
float max_abs(const float* x, int64_t n);

// The scale of a group whose largest magnitude is `max_abs`: max_abs / 127, or 1 when the group is all zeros (any
// scale quantizes zeros exactly; 1 keeps the division by it finite). An infinite or NaN max_abs (an overflowed
// activation) gives NaN, so the products give NaN, as the same overflow does in fp32 and bf16.
float int8_scale(float max_abs);

// One scale per row of a [rows, cols] matrix (a weight's output channels, rows = O and cols = C * kh * kw).
std::vector<float> int8_row_scales(const float* w, int64_t rows, int64_t cols);

}  // namespace sdcpu
