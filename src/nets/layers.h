// The building blocks the networks are written with, named like their torch.nn counterparts. Each
// loads its parameters once, by checkpoint name, from a WeightStore (the prefix is the module's path,
// e.g. "down_blocks.0.resnets.1.conv1"), and is then applied like a function.
#pragma once
#include <string>

#include "core/tensor.h"
#include "formats/weight_store.h"

namespace sdcpu {

struct Linear {
  Tensor weight;  // [out, in]
  Tensor bias;    // [out] or empty
  static Linear load(const WeightStore& w, const std::string& prefix, int64_t in, int64_t out, bool bias = true);
  Tensor operator()(const Tensor& x) const;
};

struct Conv2d {
  Tensor weight;  // [out, in, k, k]
  Tensor bias;    // [out]
  int stride = 1;
  int padding = 0;
  static Conv2d load(const WeightStore& w, const std::string& prefix, int64_t in, int64_t out, int kernel,
                     int stride = 1, int padding = -1 /* -1: kernel / 2 */);
  Tensor operator()(const Tensor& x) const;
};

struct GroupNorm {
  Tensor weight, bias;  // [channels]
  int groups = 32;
  float eps = 1e-5f;
  static GroupNorm load(const WeightStore& w, const std::string& prefix, int64_t channels, int groups, float eps);
  // With silu = true, applies SiLU after the norm (fused).
  Tensor operator()(const Tensor& x, bool silu = false) const;
};

struct LayerNorm {
  Tensor weight, bias;  // [channels]
  float eps = 1e-5f;
  static LayerNorm load(const WeightStore& w, const std::string& prefix, int64_t channels, float eps);
  Tensor operator()(const Tensor& x) const;
};

}  // namespace sdcpu
