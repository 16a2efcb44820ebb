// 2-D convolution on fp32 images, through oneDNN (torch.nn.functional.conv2d semantics, dilation 1, groups 1);
// the prepared path computes in fp32, bf16 or int8 (core/compute_type.h) and reads and writes NCHW or channels-last
// images.
//
// Two paths:
// - conv2d(x, weight, bias, ...): plain weights, plain layouts; oneDNN then falls back to its im2col +
//   sgemm implementation (gemm:jit). For one-off calls and as the "before" of bench_kernels_conv2d.
// - PreparedConv2d: the weights are reordered once into the blocked layout oneDNN's fastest implementation
//   on this CPU asks for (format_tag::any; e.g. OIhw16i16o for brgconv/jit:avx512_core), and its primitives
//   are created once per input shape and reused (DESIGN.md principles 1-2). The networks use this one.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <utility>

#include "core/compute_type.h"
#include "core/tensor.h"
#include "kernels/packed_weights.h"

namespace sdcpu {

// x [N, C, H, W], weight [O, C, kh, kw], bias [O] or empty -> [N, O, Ho, Wo] with
// Ho = (H + 2 * padding - kh) / stride + 1.
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, int stride, int padding);

// The same with separate zero padding on each side: equals F.conv2d(F.pad(x, (left, right, top, bottom)), ...,
// padding=0) without the padded copy. diffusers' Downsample2D with padding=0 (the VAE encoder) pads (0, 1, 0, 1).
// Ho = (H + pad_top + pad_bottom - kh) / stride + 1, Wo likewise.
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, int stride, int pad_top, int pad_left,
              int pad_bottom, int pad_right);

// Zero padding on each side of the two spatial dimensions.
struct Conv2dPadding {
  int top = 0, left = 0, bottom = 0, right = 0;
  static Conv2dPadding same(int p) { return {p, p, p, p}; }
};

// How an image lies in memory. Inside the networks images are channels-last, a tensor [N, H, W, C] (PyTorch's
// channels_last memory format, which IPEX runs CPU inference in too): the convolutions read and write them as
// they are (brgconv), group norm and the nearest upsample write a convolution's input straight in its
// precision (ConvSource), and the attention blocks' tokens [N, H*W, C] are the same memory. NCHW [N, C, H, W]
// is the networks' edges (latents in, images out), the plain path and the tests' references.
enum class ImageLayout { nchw, nhwc };
struct ConvLayouts {
  ImageLayout src = ImageLayout::nchw, dst = ImageLayout::nchw;
};
constexpr ConvLayouts kChannelsLast{ImageLayout::nhwc, ImageLayout::nhwc};

// A convolution's input computed by the op before it: write(out, type) writes the shape_numel(shape) values of
// the input image, laid out as `layout` says, as fp32 or rounded to bf16 (`type`, the convolution's compute
// type) into `out`, the buffer the convolution reads. The fp32 tensor in between is never written. The layout
// must be the convolution's source layout.
struct ConvSource {
  Shape shape;
  std::function<void(void* out, ComputeType type)> write;
  ImageLayout layout = ImageLayout::nhwc;
};

// A convolution with its weights prepacked once. Copies share the packed weights and the primitive cache,
// which is guarded by a mutex, so one object may be used from several threads. Memory formats: oneDNN's
// "Understanding Memory Formats" (dev_guide_understanding_memory_formats) and format_tag::any
// (dev_guide_memory_format_propagation): a primitive created with `any` picks the layout its best
// implementation wants, and the caller reorders into it.
class PreparedConv2d {
 public:
  PreparedConv2d() = default;
  // weight [O, C, kh, kw], bias [O] or empty. Packs the weight now (the plain tensor is not kept), in fp32 or,
  // with `compute` = bf16, as bfloat16 (inputs are then rounded to bf16 too; accumulation, bias, residual and
  // the output stay fp32), or, with `compute` = int8, as int8 with one scale per output channel (each input is
  // then quantized with one scale computed from it: kernels/quantize.h; int32 accumulation, fp32 output). A shape
  // oneDNN has no fast kernel for falls back from int8 to bf16 and from bf16 to fp32 (compute_type() tells).
  PreparedConv2d(const Tensor& weight, const Tensor& bias, int stride, Conv2dPadding padding,
                 ComputeType compute = ComputeType::f32, ConvLayouts layouts = {})
      : PreparedConv2d(WeightSource::of(weight), bias, stride, padding, compute, layouts) {}
  // The same with the weight read only if `weight.cache` has no packed copy (kernels/packed_weights.h).
  PreparedConv2d(const WeightSource& weight, const Tensor& bias, int stride, Conv2dPadding padding,
                 ComputeType compute = ComputeType::f32, ConvLayouts layouts = {});
  PreparedConv2d(const Tensor& weight, const Tensor& bias, int stride, int padding,
                 ComputeType compute = ComputeType::f32, ConvLayouts layouts = {})
      : PreparedConv2d(weight, bias, stride, Conv2dPadding::same(padding), compute, layouts) {}

  bool empty() const { return weights_ == nullptr; }
  int64_t out_channels() const;
  int64_t in_channels() const;
  ComputeType compute_type() const;
  ConvLayouts layouts() const;
  int stride() const { return stride_; }
  const Conv2dPadding& padding() const { return padding_; }
  // The same packed weights with other padding (no copy): Downsample2D's (0, 1, 0, 1).
  PreparedConv2d with_padding(Conv2dPadding padding) const;
  // The same packed weights (no copy) with max(0, y) applied to the output, after the residual when there is one:
  // torch.relu(conv(x) + residual), fused into the convolution as a oneDNN eltwise post-op, so the image is not
  // read and written once more (TAESD's conv + ReLU pairs).
  PreparedConv2d with_relu() const;
  bool relu() const { return relu_; }

  // oneDNN's implementation name for input shape `x_shape` (in the source layout; e.g. "brgconv:avx512_core");
  // for benchmarks and logs.
  std::string implementation(const Shape& x_shape) const;

  struct Weights;  // packed weights + per-shape primitives, shared by copies
  struct Plan;     // one input shape's primitive and reorders

 private:
  friend Tensor conv2d(const Tensor& x, const PreparedConv2d& conv, Tensor residual);
  friend Tensor conv2d(const ConvSource& x, const PreparedConv2d& conv, Tensor residual);
  std::pair<const Plan*, Shape> plan_for(const Shape& x_shape, bool residual) const;
  // input_scale: an int8 source's scale (kernels/quantize.h); unused otherwise.
  Tensor run(const Plan& plan, const dnnl::memory& src, const Shape& y_shape, Tensor residual,
             float input_scale = 1.0f) const;
  std::shared_ptr<Weights> weights_;
  int stride_ = 1;
  Conv2dPadding padding_;
  bool relu_ = false;
};

// y = conv(x) + bias, and + residual when given (residual [N, O, Ho, Wo] in the destination layout, added after
// the bias, as `conv(x) + residual` in PyTorch; ResnetBlock2D's skip), then max(0, y) for a with_relu() one. x and y
// are in the convolution's ConvLayouts. A residual whose storage no other tensor shares (passed with std::move) becomes
// y: the convolution adds into it, nothing is copied.
Tensor conv2d(const Tensor& x, const PreparedConv2d& conv, Tensor residual = Tensor());
// The same with the input written by the op before (group norm, upsample) into the convolution's source buffer.
Tensor conv2d(const ConvSource& x, const PreparedConv2d& conv, Tensor residual = Tensor());

}  // namespace sdcpu
