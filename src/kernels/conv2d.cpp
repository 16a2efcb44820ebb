#include "kernels/conv2d.h"

#include <map>
#include <mutex>
#include <tuple>

#include "core/error.h"
#include "kernels/dnnl_context.h"

namespace sdcpu {
namespace {

using dnnl::memory;
// n, c, h, w, o, kh, kw, stride, pad_top, pad_left, pad_bottom, pad_right, has_bias
using Key = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int, int, int, int, int, bool>;

// Primitives are created once per shape and reused (creating one costs far more than small convs).
struct ConvPrimitive {
  dnnl::convolution_forward::primitive_desc pd;
  dnnl::convolution_forward prim;
};

const ConvPrimitive& conv_primitive(const Key& key) {
  static std::map<Key, ConvPrimitive> cache;
  static std::mutex mutex;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  auto [n, c, h, w, o, kh, kw, stride, pt, pl, pb, pr, has_bias] = key;
  const int64_t ho = (h + pt + pb - kh) / stride + 1, wo = (w + pl + pr - kw) / stride + 1;
  memory::desc src({n, c, h, w}, memory::data_type::f32, memory::format_tag::nchw);
  memory::desc wei({o, c, kh, kw}, memory::data_type::f32, memory::format_tag::oihw);
  memory::desc bia({o}, memory::data_type::f32, memory::format_tag::x);
  memory::desc dst({n, o, ho, wo}, memory::data_type::f32, memory::format_tag::nchw);
  // oneDNN 2.x API (Debian 12 ships 2.6): an operation descriptor, then its primitive descriptor.
  // oneDNN takes the padding before (padding_l) and after (padding_r) each spatial dimension separately.
  const memory::dims strides = {stride, stride}, pad_l = {pt, pl}, pad_r = {pb, pr};
  auto desc =
      has_bias
          ? dnnl::convolution_forward::desc(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
                                            src, wei, bia, dst, strides, pad_l, pad_r)
          : dnnl::convolution_forward::desc(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
                                            src, wei, dst, strides, pad_l, pad_r);
  dnnl::convolution_forward::primitive_desc pd(desc, dnnl_engine());
  auto [pos, inserted] = cache.emplace(key, ConvPrimitive{pd, dnnl::convolution_forward(pd)});
  return pos->second;
}

}  // namespace

Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, int stride, int padding) {
  return conv2d(x, weight, bias, stride, padding, padding, padding, padding);
}

Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, int stride, int pad_top, int pad_left,
              int pad_bottom, int pad_right) {
  if (x.ndim() != 4 || weight.ndim() != 4 || x.dim(1) != weight.dim(1))
    throw InvalidArgument("conv2d: input " + shape_to_string(x.shape()) + " and weight " +
                          shape_to_string(weight.shape()) + " do not fit");
  if (stride <= 0 || pad_top < 0 || pad_left < 0 || pad_bottom < 0 || pad_right < 0)
    throw InvalidArgument("conv2d: stride must be positive and padding non-negative");
  const bool has_bias = !bias.empty();
  if (has_bias && bias.numel() != weight.dim(0)) throw InvalidArgument("conv2d: bias size mismatch");
  const int64_t n = x.dim(0), c = x.dim(1), h = x.dim(2), w = x.dim(3);
  const int64_t o = weight.dim(0), kh = weight.dim(2), kw = weight.dim(3);
  // Checked before dividing: C++ division truncates toward zero, so a negative numerator would pass.
  if (h + pad_top + pad_bottom < kh || w + pad_left + pad_right < kw)
    throw InvalidArgument("conv2d: input " + shape_to_string(x.shape()) + " too small for the kernel");
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
  p.prim.execute(dnnl_stream(), args);
  dnnl_stream().wait();
  return y;
}

}  // namespace sdcpu
