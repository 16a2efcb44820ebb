#include "kernels/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/error.h"

namespace sdcpu {
namespace {

constexpr int64_t kQueryTile = 32;
constexpr int64_t kKeyTile = 128;

}  // namespace

Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, int heads, bool causal) {
  if (q.ndim() != 3 || k.ndim() != 3 || v.ndim() != 3 || heads <= 0 || q.dim(2) % heads != 0 ||
      k.shape() != v.shape() || k.dim(0) != q.dim(0) || k.dim(2) != q.dim(2))
    throw InvalidArgument("attention: shapes q " + shape_to_string(q.shape()) + ", k " + shape_to_string(k.shape()) +
                          ", v " + shape_to_string(v.shape()) + " with " + std::to_string(heads) + " heads");
  const int64_t batch = q.dim(0), lq = q.dim(1), lk = k.dim(1), width = q.dim(2), d = width / heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  Tensor out(q.shape());
  const int64_t q_tiles = (lq + kQueryTile - 1) / kQueryTile;

#pragma omp parallel
  {
    // Per-thread scratch, allocated once per call.
    std::vector<float> scores(kQueryTile * kKeyTile), acc(kQueryTile * d), row_max(kQueryTile), row_sum(kQueryTile);
#pragma omp for collapse(3) schedule(static)
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t h = 0; h < heads; ++h) {
        for (int64_t t = 0; t < q_tiles; ++t) {
          const int64_t i0 = t * kQueryTile, i1 = std::min(lq, i0 + kQueryTile), rows = i1 - i0;
          const float* qb = q.data() + b * lq * width + h * d;
          const float* kb = k.data() + b * lk * width + h * d;
          const float* vb = v.data() + b * lk * width + h * d;
          std::fill(acc.begin(), acc.begin() + rows * d, 0.0f);
          std::fill(row_max.begin(), row_max.end(), -std::numeric_limits<float>::infinity());
          std::fill(row_sum.begin(), row_sum.end(), 0.0f);
          const int64_t key_end = causal ? std::min(lk, i1) : lk;
          for (int64_t j0 = 0; j0 < key_end; j0 += kKeyTile) {
            const int64_t j1 = std::min(key_end, j0 + kKeyTile), cols = j1 - j0;
            for (int64_t r = 0; r < rows; ++r) {
              const float* qi = qb + (i0 + r) * width;
              float* s = scores.data() + r * kKeyTile;
              float tile_max = -std::numeric_limits<float>::infinity();
              for (int64_t c = 0; c < cols; ++c) {
                const float* kj = kb + (j0 + c) * width;
                float dot = 0;
#pragma omp simd reduction(+ : dot)
                for (int64_t e = 0; e < d; ++e) dot += qi[e] * kj[e];
                s[c] = (causal && j0 + c > i0 + r) ? -std::numeric_limits<float>::infinity() : dot * scale;
                tile_max = std::max(tile_max, s[c]);
              }
              // Online softmax: rescale what was accumulated under the old running maximum.
              const float new_max = std::max(row_max[r], tile_max);
              if (new_max == -std::numeric_limits<float>::infinity()) continue;  // row fully masked so far
              const float correction = std::exp(row_max[r] - new_max);
              row_max[r] = new_max;
              float sum = 0;
              for (int64_t c = 0; c < cols; ++c) {
                s[c] = std::exp(s[c] - new_max);
                sum += s[c];
              }
              row_sum[r] = row_sum[r] * correction + sum;
              float* a = acc.data() + r * d;
              for (int64_t e = 0; e < d; ++e) a[e] *= correction;
              for (int64_t c = 0; c < cols; ++c) {
                const float p = s[c];
                const float* vj = vb + (j0 + c) * width;
#pragma omp simd
                for (int64_t e = 0; e < d; ++e) a[e] += p * vj[e];
              }
            }
          }
          for (int64_t r = 0; r < rows; ++r) {
            float* o = out.data() + b * lq * width + (i0 + r) * width + h * d;
            const float inv = 1.0f / row_sum[r];
            for (int64_t e = 0; e < d; ++e) o[e] = acc[r * d + e] * inv;
          }
        }
      }
    }
  }
  return out;
}

}  // namespace sdcpu
