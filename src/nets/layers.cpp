#include "nets/layers.h"

#include <utility>

#include "core/error.h"
#include "kernels/conv2d.h"
#include "kernels/linear.h"
#include "kernels/norms.h"
#include "kernels/upsample.h"

namespace sdcpu {

namespace {

// The layer's weight as the packing reads it: from the store's cache of packed weights when it has it, else from
// the checkpoint. Its shape is checked now, so a wrong checkpoint fails the same way either way.
WeightSource weight_source(const WeightStore& w, const std::string& name, const Shape& shape) {
  w.check(name, shape);
  return {shape, [&w, name, shape] { return w.get(name, shape); }, w.pack_cache(), name};
}

}  // namespace

Linear Linear::load(const WeightStore& w, const std::string& prefix, int64_t in, int64_t out, bool bias) {
  // Weight first, then bias (separate statements: argument evaluation order is unspecified), so a wrong
  // checkpoint's error names the weight, as the networks' tests expect.
  const WeightSource weight = weight_source(w, prefix + ".weight", {out, in});
  Linear l;
  l.prepared = PreparedLinear(weight, bias ? w.get(prefix + ".bias", {out}) : Tensor(), w.compute_type_for(prefix));
  return l;
}

Tensor Linear::operator()(const Tensor& x, Tensor residual) const { return linear(x, prepared, std::move(residual)); }

Conv2d Conv2d::load(const WeightStore& w, const std::string& prefix, int64_t in, int64_t out, int kernel, int stride,
                    int padding, ConvLayouts layouts, bool bias) {
  const WeightSource weight = weight_source(w, prefix + ".weight", {out, in, kernel, kernel});  // before the bias
  Conv2d c;
  c.prepared = PreparedConv2d(weight, bias ? w.get(prefix + ".bias", {out}) : Tensor(), stride,
                              Conv2dPadding::same(padding < 0 ? kernel / 2 : padding), w.compute_type_for(prefix), layouts);
  return c;
}

Tensor Conv2d::operator()(const Tensor& x, Tensor residual) const { return conv2d(x, prepared, std::move(residual)); }

Tensor Conv2d::operator()(const ConvSource& x, Tensor residual) const {
  return conv2d(x, prepared, std::move(residual));
}

Tensor Conv2d::padded(const Tensor& x, int top, int left, int bottom, int right) const {
  return conv2d(x, prepared.with_padding({top, left, bottom, right}));
}

GroupNorm GroupNorm::load(const WeightStore& w, const std::string& prefix, int64_t channels, int groups, float eps) {
  GroupNorm g;
  g.weight = w.get(prefix + ".weight", {channels});
  g.bias = w.get(prefix + ".bias", {channels});
  g.groups = groups;
  g.eps = eps;
  return g;
}

Tensor GroupNorm::operator()(const Tensor& x, bool silu) const {
  return group_norm(x, groups, weight, bias, eps, silu);
}

ConvSource GroupNorm::as_conv_input(const Tensor& x, bool silu) const {
  return {x.shape(), [this, &x, silu](void* out, ComputeType type) {
            group_norm_into(x, groups, weight, bias, eps, silu, out, type);
          }};
}

ConvSource upsample_as_conv_input(const Tensor& x, int64_t out_h, int64_t out_w) {
  if (x.ndim() != 4)
    throw InvalidArgument("upsample_nearest: expected [N, H, W, C], got " + shape_to_string(x.shape()));
  return {{x.dim(0), out_h, out_w, x.dim(3)},
          [&x, out_h, out_w](void* out, ComputeType type) { upsample_nearest_into(x, out_h, out_w, out, type); }};
}

LayerNorm LayerNorm::load(const WeightStore& w, const std::string& prefix, int64_t channels, float eps) {
  LayerNorm l;
  l.weight = w.get(prefix + ".weight", {channels});
  l.bias = w.get(prefix + ".bias", {channels});
  l.eps = eps;
  return l;
}

Tensor LayerNorm::operator()(const Tensor& x) const { return layer_norm(x, weight, bias, eps); }

}  // namespace sdcpu
