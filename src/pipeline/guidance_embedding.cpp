#include "pipeline/guidance_embedding.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "core/error.h"

namespace sdcpu {
namespace {

// torch.exp on a float32 tensor as Debian's torch 1.13 computes it on x86 CPUs: ATen's Vectorized<float>::exp is
// SLEEF's Sleef_expf8_u10 (sleefsimdsp.c xexpf with FMA), accurate to 1 ulp but not correctly rounded. glibc's expf
// is, and differs in the last bit for ~10% of the frequencies here; multiplied by w = 7500 (guidance 8.5) that
// moves the embedding by up to 4e-4. Checked against torch.exp on 1211 inputs (all equal).
float torch_expf(float d) {
  const int q = static_cast<int>(std::lrint(d * 1.442695040888963407359924681001892137426645954152985934135449406931f));
  const auto qf = static_cast<float>(q);
  float s = std::fma(qf, -0.693145751953125f, d);   // -L2Uf
  s = std::fma(qf, -1.428606765330187045e-06f, s);  // -L2Lf
  float u = 0.000198527617612853646278381f;
  u = std::fma(u, s, 0.00139304355252534151077271f);
  u = std::fma(u, s, 0.00833336077630519866943359f);
  u = std::fma(u, s, 0.0416664853692054748535156f);
  u = std::fma(u, s, 0.166666671633720397949219f);
  u = std::fma(u, s, 0.5f);
  u = 1.0f + std::fma(s * s, u, s);
  u = std::ldexp(u, q);
  if (d < -104.0f) u = 0.0f;
  if (d > 100.0f) u = INFINITY;
  return u;
}

}  // namespace

Tensor guidance_scale_embedding(float guidance_scale, int64_t batch, int64_t dim) {
  if (batch <= 0) throw InvalidArgument("guidance_scale_embedding: batch must be positive");
  const int64_t half = dim / 2;
  if (half - 1 <= 0)
    throw ModelError("unet: time_cond_proj_dim " + std::to_string(dim) + " is too small for a guidance embedding");
  // torch.tensor(guidance_scale - 1): the subtraction in Python floats (double), then float32; `w * 1000.0` in float32.
  const float w = static_cast<float>(static_cast<double>(guidance_scale) - 1.0) * 1000.0f;
  // emb = torch.log(torch.tensor(10000.0)) / (half_dim - 1), a float32 tensor divided by a Python int.
  const float step = std::log(10000.0f) / static_cast<float>(half - 1);
  std::vector<float> row(dim, 0.0f);
  for (int64_t i = 0; i < half; ++i) {
    // torch.exp(torch.arange(half_dim) * -emb), then w[:, None] * emb[None, :]
    const float frequency = torch_expf(static_cast<float>(i) * -step);
    const float arg = w * frequency;
    row[i] = std::sin(arg);  // torch.cat([sin, cos], dim=1)
    row[half + i] = std::cos(arg);
  }
  Tensor emb({batch, dim});
  for (int64_t b = 0; b < batch; ++b) std::copy(row.begin(), row.end(), emb.data() + b * dim);
  return emb;
}

}  // namespace sdcpu
