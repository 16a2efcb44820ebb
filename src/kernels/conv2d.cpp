#include "kernels/conv2d.h"

#include <algorithm>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "core/error.h"
#include "kernels/dnnl_context.h"
#include "kernels/packed_weights.h"
#include "kernels/quantize.h"
#include "kernels/scratch.h"

namespace sdcpu {
namespace {

using dnnl::memory;
using Tag = memory::format_tag;
constexpr auto kF32 = memory::data_type::f32;
constexpr auto kBF16 = memory::data_type::bf16;
constexpr auto kS8 = memory::data_type::s8;

// ---- Plain path ---------------------------------------------------------------------------------------------

// n, c, h, w, o, kh, kw, stride, pad_top, pad_left, pad_bottom, pad_right, has_bias
using Key = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int, int, int, int, int, bool>;

// Primitives are created once per shape and reused (creating one costs far more than small convs).
struct ConvPrimitive {
  dnnl::convolution_forward::primitive_desc pd;
  dnnl::convolution_forward prim;
};

dnnl::convolution_forward::desc conv_desc(const memory::desc& src, const memory::desc& wei, const memory::desc& bia,
                                          const memory::desc& dst, int stride, const Conv2dPadding& p) {
  // oneDNN 2.x API (Debian 12 ships 2.6): an operation descriptor, then its primitive descriptor.
  // oneDNN takes the padding before (padding_l) and after (padding_r) each spatial dimension separately.
  const memory::dims strides = {stride, stride}, pad_l = {p.top, p.left}, pad_r = {p.bottom, p.right};
  return bia.is_zero()
             ? dnnl::convolution_forward::desc(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
                                               src, wei, dst, strides, pad_l, pad_r)
             : dnnl::convolution_forward::desc(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
                                               src, wei, bia, dst, strides, pad_l, pad_r);
}

const ConvPrimitive& conv_primitive(const Key& key) {
  static std::map<Key, ConvPrimitive> cache;
  static std::mutex mutex;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  auto [n, c, h, w, o, kh, kw, stride, pt, pl, pb, pr, has_bias] = key;
  const int64_t ho = (h + pt + pb - kh) / stride + 1, wo = (w + pl + pr - kw) / stride + 1;
  memory::desc src({n, c, h, w}, kF32, Tag::nchw);
  memory::desc wei({o, c, kh, kw}, kF32, Tag::oihw);
  memory::desc bia = has_bias ? memory::desc({o}, kF32, Tag::x) : memory::desc();
  memory::desc dst({n, o, ho, wo}, kF32, Tag::nchw);
  dnnl::convolution_forward::primitive_desc pd(conv_desc(src, wei, bia, dst, stride, {pt, pl, pb, pr}),
                                               with_user_scratchpad(), dnnl_engine());
  auto [pos, inserted] = cache.emplace(key, ConvPrimitive{pd, dnnl::convolution_forward(pd)});
  return pos->second;
}

void check_conv_args(const Shape& x, const Shape& w, int stride, const Conv2dPadding& p) {
  if (x.size() != 4 || w.size() != 4 || x[1] != w[1])
    throw InvalidArgument("conv2d: input " + shape_to_string(x) + " and weight " + shape_to_string(w) + " do not fit");
  if (stride <= 0 || p.top < 0 || p.left < 0 || p.bottom < 0 || p.right < 0)
    throw InvalidArgument("conv2d: stride must be positive and padding non-negative");
  // Checked before dividing: C++ division truncates toward zero, so a negative numerator would pass.
  if (x[2] + p.top + p.bottom < w[2] || x[3] + p.left + p.right < w[3])
    throw InvalidArgument("conv2d: input " + shape_to_string(x) + " too small for the kernel");
}

// The memory formats a prepared convolution's primitive is asked for. Channels-last images (nhwc) are taken as
// they are: oneDNN picks brgconv (batch-reduce GEMM) for them, which computes as fast as its direct kernels on
// blocked layouts or faster, and no reorder runs. Measured on this project's Zen 5 (oneDNN 2.6, 2 threads), the
// convolution alone, nhwc (brgconv) against nChw16c (jit): bf16 3x3 at the VAE decoder's shapes 3.26 s against
// 3.41 s summed over one 512x512 decode (512->512 at 256x256: 767 against 606 GFLOP/s; 128->128 at 512x512: 726
// against 767), at the UNet's 320 channels 767 against 803; fp32 3x3 at the UNet's 320/640 channels 388/364
// against 355/336, 1280 at 16x16 286 against 323. Our nchw tensors (the networks' edges, tests) are reordered
// into nChw16c (channel blocks of 16, oneDNN's dev_guide_understanding_memory_formats), whose reorders from and
// to nchw are cheaper than nhwc's; an input channel count that is not a multiple of 16 (conv_in on 4 latent
// channels, the VAE encoder on 3 image channels) is read as nchw directly. Weights are always `any`
// (OIhw16i16o-style), prepacked once. A combination that only the reference implementation supports falls back
// to all-`any`, then to the plain layouts.
//
// In bf16 (`compute` = bf16) the source and the weights are bf16 and the destination stays fp32: the op before
// the convolution (group norm, upsample: ConvSource) or the reorder from our fp32 tensor rounds its values to
// bf16 on the way, the products accumulate in fp32 (vdpbf16ps), and bias, residual and everything after the
// convolution see fp32.
//
// In int8 (`compute` = s8) the weights are per-output-channel int8 and the source is quantized with one scale per
// call (kernels/quantize.h). oneDNN 2.x convolutions take only output scales fixed at creation, so the weights'
// scales are those, and the input's scale, known only at run time, is a binary multiply post-op by a one-value
// tensor: dst = input_scale * (weight_scale[o] * (acc + bias'[o])), bias' = bias / (input_scale * weight_scale[o])
// given at run time (2.x adds the bias before the scales). int8_attr() sets that up before the other post-ops.
dnnl::convolution_forward::primitive_desc prepared_pd(int64_t n, int64_t c, int64_t h, int64_t w, int64_t o, int64_t kh,
                                                      int64_t kw, const memory::desc& bias, int stride,
                                                      const Conv2dPadding& p, ConvLayouts layouts,
                                                      const dnnl::primitive_attr& attr, memory::data_type compute,
                                                      const memory::desc& weights = memory::desc()) {
  const int64_t ho = (h + p.top + p.bottom - kh) / stride + 1, wo = (w + p.left + p.right - kw) / stride + 1;
  const Tag src_tag = layouts.src == ImageLayout::nhwc ? Tag::nhwc : c % 16 == 0 ? Tag::nChw16c : Tag::nchw;
  const Tag dst_tag = layouts.dst == ImageLayout::nhwc || src_tag == Tag::nhwc ? Tag::nhwc : Tag::nChw16c;
  const std::pair<Tag, Tag> candidates[] = {{src_tag, dst_tag}, {Tag::any, Tag::any}, {Tag::nchw, Tag::nchw}};
  const memory::desc wei = weights.is_zero() ? memory::desc({o, c, kh, kw}, compute, Tag::any) : weights;
  for (size_t i = 0;; ++i) {
    auto [s, d] = candidates[i];
    const memory::desc src({n, c, h, w}, compute, s), dst({n, o, ho, wo}, kF32, d);
    try {
      dnnl::convolution_forward::primitive_desc pd(conv_desc(src, wei, bias, dst, stride, p), attr, dnnl_engine());
      if (!is_reference_implementation(pd) || i + 1 == std::size(candidates)) return pd;
    } catch (const dnnl::error&) {
      if (i + 1 == std::size(candidates)) throw;
    }
  }
}

// The attributes an int8 convolution starts from: output scales per channel (dimension 1 of dst), then the
// input's scale as the first post-op (see prepared_pd). `post_ops` are appended after it.
dnnl::primitive_attr int8_attr(const std::vector<float>& weight_scales, const dnnl::post_ops& post_ops) {
  dnnl::primitive_attr attr = with_user_scratchpad();
  attr.set_output_scales(1 << 1, weight_scales);
  dnnl::post_ops ops;
  ops.append_binary(dnnl::algorithm::binary_mul, memory::desc({1, 1, 1, 1}, kF32, Tag::abcd));
  for (int i = 0; i < post_ops.len(); ++i) {
    if (post_ops.kind(i) == dnnl::primitive::kind::sum) {
      ops.append_sum(1.0f);
    } else {
      float scale, alpha, beta;
      dnnl::algorithm alg;
      post_ops.get_params_eltwise(i, scale, alg, alpha, beta);
      ops.append_eltwise(scale, alg, alpha, beta);
    }
  }
  attr.set_post_ops(ops);
  return attr;
}

Tag tag_of(ImageLayout layout) { return layout == ImageLayout::nhwc ? Tag::nhwc : Tag::nchw; }

// [N, C, H, W] dimensions of an image shape in `layout`.
struct ImageDims {
  int64_t n, c, h, w;
};
ImageDims image_dims(const Shape& s, ImageLayout layout) {
  if (s.size() != 4) throw InvalidArgument("conv2d: input must have 4 dimensions, got " + shape_to_string(s));
  return layout == ImageLayout::nhwc ? ImageDims{s[0], s[3], s[1], s[2]} : ImageDims{s[0], s[1], s[2], s[3]};
}
Shape image_shape(const ImageDims& d, ImageLayout layout) {
  return layout == ImageLayout::nhwc ? Shape{d.n, d.h, d.w, d.c} : Shape{d.n, d.c, d.h, d.w};
}

}  // namespace

Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, int stride, int padding) {
  return conv2d(x, weight, bias, stride, padding, padding, padding, padding);
}

Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, int stride, int pad_top, int pad_left,
              int pad_bottom, int pad_right) {
  check_conv_args(x.shape(), weight.shape(), stride, {pad_top, pad_left, pad_bottom, pad_right});
  const bool has_bias = !bias.empty();
  if (has_bias && bias.numel() != weight.dim(0)) throw InvalidArgument("conv2d: bias size mismatch");
  const int64_t n = x.dim(0), c = x.dim(1), h = x.dim(2), w = x.dim(3);
  const int64_t o = weight.dim(0), kh = weight.dim(2), kw = weight.dim(3);
  const int64_t ho = (h + pad_top + pad_bottom - kh) / stride + 1, wo = (w + pad_left + pad_right - kw) / stride + 1;
  const ConvPrimitive& p =
      conv_primitive({n, c, h, w, o, kh, kw, stride, pad_top, pad_left, pad_bottom, pad_right, has_bias});
  Tensor y({n, o, ho, wo});
  auto& eng = dnnl_engine();
  std::unordered_map<int, memory> args = {
      {DNNL_ARG_SRC, memory(p.pd.src_desc(), eng, const_cast<float*>(x.data()))},
      {DNNL_ARG_WEIGHTS, memory(p.pd.weights_desc(), eng, const_cast<float*>(weight.data()))},
      {DNNL_ARG_DST, memory(p.pd.dst_desc(), eng, y.data())}};
  if (has_bias) args[DNNL_ARG_BIAS] = memory(p.pd.bias_desc(), eng, const_cast<float*>(bias.data()));
  const ScratchBuffer pad = add_scratchpad(p.pd, args);
  p.prim.execute(dnnl_stream(), args);
  dnnl_stream().wait();
  return y;
}

// ---- Prepared path ------------------------------------------------------------------------------------------

namespace {

// n, h, w, stride, pad_top, pad_left, pad_bottom, pad_right, with residual, with ReLU
using PlanKey = std::tuple<int64_t, int64_t, int64_t, int, int, int, int, int, bool, bool>;

}  // namespace

// Everything one input shape needs, created once: the primitive and, where it wants other layouts than the
// caller's tensors have (our nchw against its nChw16c), the reorders between them.
struct PreparedConv2d::Plan {
  dnnl::convolution_forward::primitive_desc pd;
  dnnl::convolution_forward prim;
  const memory* weights = nullptr;  // the packed weights in pd.weights_desc(), owned by Weights
  memory::desc src_user, dst_user;  // our fp32 tensors, in the convolution's ConvLayouts
  bool reorder_src = false, reorder_dst = false;
  // A ConvSource can write the primitive's source itself: it wants our layout, in the compute precision.
  bool source_in_place = false;
  dnnl::reorder src_in, dst_out, residual_in;  // set where the layouts differ
};

struct PreparedConv2d::Weights {
  int64_t o = 0, c = 0, kh = 0, kw = 0;
  ConvLayouts layouts;
  memory::data_type compute = kF32;  // of the source and the weights; the destination is always fp32
  std::vector<float> weight_scales;  // int8: per output channel, weight[o] ~ weight_scales[o] * packed[o]
  memory::desc bias_desc;            // [O], format x; a zero desc when there is none
  memory bias;
  Tensor bias_storage;
  std::mutex mutex;
  // The weight in every layout a plan has asked for; nearly always exactly one.
  PackedWeights packed;
  std::map<PlanKey, std::unique_ptr<Plan>> plans;

  const Plan& plan(int64_t n, int64_t h, int64_t w, int stride, const Conv2dPadding& p, bool residual, bool relu) {
    std::lock_guard<std::mutex> lock(mutex);
    const PlanKey key{n, h, w, stride, p.top, p.left, p.bottom, p.right, residual, relu};
    auto it = plans.find(key);
    if (it != plans.end()) return *it->second;
    const int64_t ho = (h + p.top + p.bottom - kh) / stride + 1, wo = (w + p.left + p.right - kw) / stride + 1;
    const Tag src_tag = tag_of(layouts.src), dst_tag = tag_of(layouts.dst);
    dnnl::primitive_attr attr = with_user_scratchpad();
    dnnl::post_ops ops;
    // dst = conv(x) + bias + 1.0 * dst: the residual is in dst before the convolution.
    if (residual) ops.append_sum(1.0f);
    // Then max(0, dst) (oneDNN 2.x: append_eltwise(scale, algorithm, alpha, beta); alpha 0 is the plain ReLU).
    if (relu) ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_relu, 0.0f, 0.0f);
    if (residual || relu) attr.set_post_ops(ops);
    if (compute == kS8) attr = int8_attr(weight_scales, ops);
    // int8: the one layout the weight is packed in (PackedWeights::packed_desc); others ask for their favourite.
    const auto pd = prepared_pd(n, c, h, w, o, kh, kw, bias_desc, stride, p, layouts, attr, compute,
                                compute == kS8 ? packed.packed_desc() : memory::desc());
    auto plan = std::make_unique<Plan>();
    plan->pd = pd;
    plan->prim = dnnl::convolution_forward(pd);
    plan->weights = packed.in(pd.weights_desc());
    plan->src_user = memory::desc({n, c, h, w}, kF32, src_tag);
    plan->dst_user = memory::desc({n, o, ho, wo}, kF32, dst_tag);
    plan->reorder_src = pd.src_desc() != plan->src_user;
    plan->reorder_dst = pd.dst_desc() != plan->dst_user;
    // An int8 source needs its scale, which only the whole fp32 input gives: never written in place.
    plan->source_in_place = compute != kS8 && pd.src_desc() == memory::desc({n, c, h, w}, compute, src_tag);
    auto& eng = dnnl_engine();
    if (plan->reorder_src) {
      dnnl::primitive_attr quantize;
      if (compute == kS8) quantize.set_output_scales(0, {DNNL_RUNTIME_F32_VAL});  // 1 / the input's scale
      plan->src_in = dnnl::reorder(dnnl::reorder::primitive_desc(eng, plan->src_user, eng, pd.src_desc(), quantize));
    }
    if (plan->reorder_dst) {
      plan->dst_out = dnnl::reorder(dnnl::reorder::primitive_desc(eng, pd.dst_desc(), eng, plan->dst_user));
      if (residual)
        plan->residual_in = dnnl::reorder(dnnl::reorder::primitive_desc(eng, plan->dst_user, eng, pd.dst_desc()));
    }
    auto [pos, inserted] = plans.emplace(key, std::move(plan));
    return *pos->second;
  }
};

PreparedConv2d::PreparedConv2d(const WeightSource& weight, const Tensor& bias, int stride, Conv2dPadding padding,
                               ComputeType compute, ConvLayouts layouts)
    : weights_(std::make_shared<Weights>()), stride_(stride), padding_(padding) {
  if (weight.shape.size() != 4)
    throw InvalidArgument("conv2d: weight must be [O, C, kh, kw], got " + shape_to_string(weight.shape));
  if (!bias.empty() && bias.numel() != weight.shape[0]) throw InvalidArgument("conv2d: bias size mismatch");
  if (stride <= 0 || padding.top < 0 || padding.left < 0 || padding.bottom < 0 || padding.right < 0)
    throw InvalidArgument("conv2d: stride must be positive and padding non-negative");
  Weights& wt = *weights_;
  wt.o = weight.shape[0];
  wt.c = weight.shape[1];
  wt.kh = weight.shape[2];
  wt.kw = weight.shape[3];
  wt.layouts = layouts;
  auto& eng = dnnl_engine();
  if (!bias.empty()) {
    wt.bias_storage = bias.clone();
    wt.bias_desc = memory::desc({wt.o}, kF32, Tag::x);
    wt.bias = memory(wt.bias_desc, eng, wt.bias_storage.data());
  }
  // Pack now, into the layout the primitive for a representative input (one 64x64 image, the UNet's and the
  // VAE decoder's latent size) asks for. The weight layout depends on the ISA, the channel counts and the
  // activation layouts, not on the spatial size, so later shapes find it already packed; one that wants another
  // layout gets its own copy, reordered from this one, so the plain weight need not be kept.
  auto representative_pd = [&] {
    // int8: the weight layout does not depend on the scales' values, only on their presence.
    const dnnl::primitive_attr attr = wt.compute == kS8 ? int8_attr(std::vector<float>(wt.o, 1.0f), dnnl::post_ops())
                                                        : with_user_scratchpad();
    return prepared_pd(1, wt.c, std::max<int64_t>(64, wt.kh), std::max<int64_t>(64, wt.kw), wt.o, wt.kh, wt.kw,
                       wt.bias_desc, stride, padding, layouts, attr, wt.compute);
  };
  wt.compute = compute == ComputeType::int8 ? kS8 : compute == ComputeType::bf16 ? kBF16 : kF32;
  auto pd = representative_pd();
  // A shape oneDNN has no fast int8 or bf16 kernel for (e.g. conv_in's 4 input channels on some ISAs) would run on
  // its reference implementation, far slower than fp32: such a convolution falls back to bf16, then fp32.
  if (wt.compute == kS8 && is_reference_implementation(pd)) {
    wt.compute = kBF16;
    pd = representative_pd();
  }
  if (wt.compute == kBF16 && is_reference_implementation(pd)) {
    wt.compute = kF32;
    pd = representative_pd();
  }
  const memory::desc plain({wt.o, wt.c, wt.kh, wt.kw}, kF32, Tag::oihw);
  if (wt.compute == kS8)
    wt.weight_scales = wt.packed.pack_int8(weight, plain, pd.weights_desc(), /*out_dim=*/0);
  else
    wt.packed.pack(weight, plain, pd.weights_desc());
}

int64_t PreparedConv2d::out_channels() const { return weights_ ? weights_->o : 0; }
ComputeType PreparedConv2d::compute_type() const {
  if (!weights_) return ComputeType::f32;
  return weights_->compute == kS8 ? ComputeType::int8 : weights_->compute == kBF16 ? ComputeType::bf16 : ComputeType::f32;
}
int64_t PreparedConv2d::in_channels() const { return weights_ ? weights_->c : 0; }
ConvLayouts PreparedConv2d::layouts() const { return weights_ ? weights_->layouts : ConvLayouts{}; }

PreparedConv2d PreparedConv2d::with_padding(Conv2dPadding padding) const {
  if (padding.top < 0 || padding.left < 0 || padding.bottom < 0 || padding.right < 0)
    throw InvalidArgument("conv2d: padding must be non-negative");
  PreparedConv2d copy = *this;
  copy.padding_ = padding;
  return copy;
}

PreparedConv2d PreparedConv2d::with_relu() const {
  PreparedConv2d copy = *this;
  copy.relu_ = true;
  return copy;
}

std::string PreparedConv2d::implementation(const Shape& x_shape) const {
  if (!weights_) return "";
  const ImageDims d = image_dims(x_shape, weights_->layouts.src);
  check_conv_args({d.n, d.c, d.h, d.w}, {weights_->o, weights_->c, weights_->kh, weights_->kw}, stride_, padding_);
  return weights_->plan(d.n, d.h, d.w, stride_, padding_, false, relu_).pd.impl_info_str();
}

// The convolution proper, once its source is in `src` (in pd.src_desc()): the residual (if any) is in the
// destination first, for the sum post-op. Returns y in the destination's ConvLayouts.
Tensor PreparedConv2d::run(const Plan& plan, const memory& src, const Shape& y_shape, Tensor residual,
                           float input_scale) const {
  const Weights& wt = *weights_;
  auto& eng = dnnl_engine();
  auto& s = dnnl_stream();
  const bool has_residual = !residual.empty();
  if (has_residual && residual.shape() != y_shape)
    throw InvalidArgument("conv2d: residual " + shape_to_string(residual.shape()) + " does not match the output " +
                          shape_to_string(y_shape));
  // Without a destination reorder the convolution adds into the residual itself, or a copy when others hold it;
  // with one, the residual is reordered into the primitive's destination.
  Tensor y = has_residual && !plan.reorder_dst ? residual.unshared() : Tensor(y_shape);
  memory y_user(plan.dst_user, eng, y.data());
  const ScratchBuffer dst_buffer =
      plan.reorder_dst ? ScratchBuffer(ScratchSlot::conv_dst, plan.pd.dst_desc().get_size()) : ScratchBuffer();
  memory dst = plan.reorder_dst ? memory(plan.pd.dst_desc(), eng, dst_buffer.data()) : y_user;
  if (has_residual && plan.reorder_dst) {
    memory r_user(plan.dst_user, eng, residual.data());
    plan.residual_in.execute(s, r_user, dst);
  }
  std::unordered_map<int, memory> args = {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, *plan.weights}, {DNNL_ARG_DST, dst}};
  if (!wt.bias_desc.is_zero()) args[DNNL_ARG_BIAS] = wt.bias;
  ScratchBuffer scales_buffer;
  if (wt.compute == kS8) {
    // The input's scale for the post-op, and the bias divided by everything that scales it (see prepared_pd).
    scales_buffer = ScratchBuffer(ScratchSlot::int8_scales, (wt.o + 1) * sizeof(float));
    float* scale = static_cast<float*>(scales_buffer.data());
    scale[0] = input_scale;
    args[DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1] =
        memory(memory::desc({1, 1, 1, 1}, kF32, Tag::abcd), eng, scale);
    if (!wt.bias_desc.is_zero()) {
      float* bias = scale + 1;
      for (int64_t i = 0; i < wt.o; ++i) bias[i] = wt.bias_storage.data()[i] / (input_scale * wt.weight_scales[i]);
      args[DNNL_ARG_BIAS] = memory(wt.bias_desc, eng, bias);
    }
  }
  const ScratchBuffer pad = add_scratchpad(plan.pd, args);
  plan.prim.execute(s, args);
  if (plan.reorder_dst) plan.dst_out.execute(s, dst, y_user);
  s.wait();
  return y;
}

// The plan for an input of shape `x_shape` (in the source layout), and the output's shape.
std::pair<const PreparedConv2d::Plan*, Shape> PreparedConv2d::plan_for(const Shape& x_shape, bool residual) const {
  if (empty()) throw InvalidArgument("conv2d: empty convolution");
  Weights& wt = *weights_;
  const ImageDims d = image_dims(x_shape, wt.layouts.src);
  check_conv_args({d.n, d.c, d.h, d.w}, {wt.o, wt.c, wt.kh, wt.kw}, stride_, padding_);
  const Plan& plan = wt.plan(d.n, d.h, d.w, stride_, padding_, residual, relu_);
  const memory::dims y = plan.dst_user.dims();  // [N, O, Ho, Wo], as the plan computed them
  return {&plan, image_shape({y[0], y[1], y[2], y[3]}, wt.layouts.dst)};
}

Tensor conv2d(const Tensor& x, const PreparedConv2d& conv, Tensor residual) {
  const auto [plan, y_shape] = conv.plan_for(x.shape(), !residual.empty());
  auto& eng = dnnl_engine();
  memory x_user(plan->src_user, eng, const_cast<float*>(x.data()));
  if (!plan->reorder_src) return conv.run(*plan, x_user, y_shape, std::move(residual));
  const ScratchBuffer src_buffer(ScratchSlot::conv_src, plan->pd.src_desc().get_size());
  memory src(plan->pd.src_desc(), eng, src_buffer.data());
  std::unordered_map<int, memory> reorder_args = {{DNNL_ARG_FROM, x_user}, {DNNL_ARG_TO, src}};
  float input_scale = 1.0f, inverse_input_scale = 1.0f;
  if (conv.compute_type() == ComputeType::int8) {
    input_scale = int8_scale(max_abs(x.data(), x.numel()));
    inverse_input_scale = 1.0f / input_scale;
    reorder_args[DNNL_ARG_ATTR_OUTPUT_SCALES] = memory(memory::desc({1}, kF32, Tag::a), eng, &inverse_input_scale);
  }
  plan->src_in.execute(dnnl_stream(), reorder_args);
  return conv.run(*plan, src, y_shape, std::move(residual), input_scale);
}

Tensor conv2d(const ConvSource& x, const PreparedConv2d& conv, Tensor residual) {
  if (!conv.empty() && x.layout != conv.layouts().src)
    throw InvalidArgument("conv2d: the source's layout is not the convolution's");
  const auto [plan, y_shape] = conv.plan_for(x.shape, !residual.empty());
  if (!plan->source_in_place) {  // the primitive wants another layout: write our fp32 tensor, then reorder it
    Tensor input(x.shape);
    x.write(input.data(), ComputeType::f32);
    return conv2d(input, conv, std::move(residual));
  }
  const ScratchBuffer src_buffer(ScratchSlot::conv_src, plan->pd.src_desc().get_size());
  x.write(src_buffer.data(), conv.compute_type());
  return conv.run(*plan, memory(plan->pd.src_desc(), dnnl_engine(), src_buffer.data()), y_shape, std::move(residual));
}

}  // namespace sdcpu
