// The building blocks the networks are written with, named like their torch.nn counterparts. Each
// loads its parameters once, by checkpoint name, from a WeightStore (the prefix is the module's path,
// e.g. "down_blocks.0.resnets.1.conv1"), and is then applied like a function.
#pragma once
#include <string>

#include "core/tensor.h"
#include "formats/weight_store.h"
#include "kernels/conv2d.h"
#include "kernels/linear.h"

namespace sdcpu {

// The weight is prepacked at load into oneDNN's blocked layout (kernels/linear.h), in the store's compute type
// (fp32 or bf16, WeightStore::compute_type); the plain weight is not
// kept. Copies share the packed weight.
struct Linear {
  PreparedLinear prepared;
  static Linear load(const WeightStore& w, const std::string& prefix, int64_t in, int64_t out, bool bias = true);
  bool empty() const { return prepared.empty(); }
  Tensor operator()(const Tensor& x) const;
};

// The weights are prepacked at load into oneDNN's blocked layout (kernels/conv2d.h), in the store's compute
// type; the plain weight is not
// kept. Copies share the packed weights.
struct Conv2d {
  PreparedConv2d prepared;  // stride and padding included
  static Conv2d load(const WeightStore& w, const std::string& prefix, int64_t in, int64_t out, int kernel,
                     int stride = 1, int padding = -1 /* -1: kernel / 2 */);
  bool empty() const { return prepared.empty(); }
  Tensor operator()(const Tensor& x) const;
  // The same weights with other zero padding per side: Downsample2D's F.pad(x, (0, 1, 0, 1)) then padding 0.
  Tensor padded(const Tensor& x, int top, int left, int bottom, int right) const;
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
