// The building blocks the networks are written with, named like their torch.nn counterparts. Each
// loads its parameters once, by checkpoint name, from a WeightStore (the prefix is the module's path,
// e.g. "down_blocks.0.resnets.1.conv1"), and is then applied like a function.
//
// Images are channels-last inside the networks, [N, H, W, C] (kernels/conv2d.h, ImageLayout): a tensor that
// PyTorch would hold as [N, C, H, W] is here its permute(0, 2, 3, 1). Only a network's first and last
// convolutions read or write NCHW, the layout of its inputs and outputs.
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
  // x W^T + b, + residual when given (see kernels/linear.h on passing it with std::move).
  Tensor operator()(const Tensor& x, Tensor residual = Tensor()) const;
};

// The weights are prepacked at load into oneDNN's blocked layout (kernels/conv2d.h), in the store's compute
// type; the plain weight is not
// kept. Copies share the packed weights.
struct Conv2d {
  PreparedConv2d prepared;  // stride and padding included
  // bias = false: a torch.nn.Conv2d(..., bias=False), which has no "<prefix>.bias" tensor.
  static Conv2d load(const WeightStore& w, const std::string& prefix, int64_t in, int64_t out, int kernel,
                     int stride = 1, int padding = -1 /* -1: kernel / 2 */, ConvLayouts layouts = kChannelsLast,
                     bool bias = true);
  bool empty() const { return prepared.empty(); }
  // conv(x) + residual (when given; see kernels/conv2d.h on passing it with std::move).
  Tensor operator()(const Tensor& x, Tensor residual = Tensor()) const;
  // The same on an input the op before writes into this convolution's input buffer (GroupNorm::as_conv_input,
  // upsample_as_conv_input).
  Tensor operator()(const ConvSource& x, Tensor residual = Tensor()) const;
  // The same weights with other zero padding per side: Downsample2D's F.pad(x, (0, 1, 0, 1)) then padding 0.
  Tensor padded(const Tensor& x, int top, int left, int bottom, int right) const;
};

struct GroupNorm {
  Tensor weight, bias;  // [channels]
  int groups = 32;
  float eps = 1e-5f;
  static GroupNorm load(const WeightStore& w, const std::string& prefix, int64_t channels, int groups, float eps);
  // x [N, ..., C], channels-last. With silu = true, applies SiLU after the norm (fused).
  Tensor operator()(const Tensor& x, bool silu = false) const;
  // The same, computed by the convolution it feeds, straight into its input in its precision: conv(norm(x))
  // is written conv(norm.as_conv_input(x)). x must outlive the call.
  ConvSource as_conv_input(const Tensor& x, bool silu = false) const;
};

// F.interpolate(x, size=(out_h, out_w), mode="nearest") on x [N, H, W, C], computed by the convolution it feeds
// (Upsample2D): conv(upsample_as_conv_input(x, ...)). x must outlive the call.
ConvSource upsample_as_conv_input(const Tensor& x, int64_t out_h, int64_t out_w);

struct LayerNorm {
  Tensor weight, bias;  // [channels]
  float eps = 1e-5f;
  static LayerNorm load(const WeightStore& w, const std::string& prefix, int64_t channels, float eps);
  Tensor operator()(const Tensor& x) const;
};

}  // namespace sdcpu
