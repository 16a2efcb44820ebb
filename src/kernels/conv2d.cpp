#include "kernels/conv2d.h"

#include <map>
#include <mutex>
#include <tuple>

#include "core/error.h"
#include "kernels/dnnl_context.h"

namespace sdcpu {
namespace {

using dnnl::memory;
using Key = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int, int, bool>;

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
  auto [n, c, h, w, o, kh, kw, stride, padding, has_bias] = key;
  const int64_t ho = (h + 2 * padding - kh) / stride + 1, wo = (w + 2 * padding - kw) / stride + 1;
  memory::desc src({n, c, h, w}, memory::data_type::f32, memory::format_tag::nchw);
  memory::desc wei({o, c, kh, kw}, memory::data_type::f32, memory::format_tag::oihw);
  memory::desc bia({o}, memory::data_type::f32, memory::format_tag::x);
  memory::desc dst({n, o, ho, wo}, memory::data_type::f32, memory::format_tag::nchw);
  // oneDNN 2.x API (Debian 12 ships 2.6): an operation descriptor, then its primitive descriptor.
  const memory::dims strides = {stride, stride}, pad = {padding, padding};
  auto desc = has_bias ? dnnl::convolution_forward::desc(dnnl::prop_kind::forward_inference,
                                                         dnnl::algorithm::convolution_direct, src, wei, bia, dst,
                                                         strides, pad, pad)
                       : dnnl::convolution_forward::desc(dnnl::prop_kind::forward_inference,
                                                         dnnl::algorithm::convolution_direct, src, wei, dst, strides,
                                                         pad, pad);
  dnnl::convolution_forward::primitive_desc pd(desc, dnnl_engine());
  auto [pos, inserted] = cache.emplace(key, ConvPrimitive{pd, dnnl::convolution_forward(pd)});
  return pos->second;
}

}  // namespace

Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, int stride, int padding) {
  if (x.ndim() != 4 || weight.ndim() != 4 || x.dim(1) != weight.dim(1))
    throw InvalidArgument("conv2d: input " + shape_to_string(x.shape()) + " and weight " +
                          shape_to_string(weight.shape()) + " do not fit");
  const bool has_bias = !bias.empty();
  if (has_bias && bias.numel() != weight.dim(0)) throw InvalidArgument("conv2d: bias size mismatch");
  const int64_t n = x.dim(0), c = x.dim(1), h = x.dim(2), w = x.dim(3);
  const int64_t o = weight.dim(0), kh = weight.dim(2), kw = weight.dim(3);
  const int64_t ho = (h + 2 * padding - kh) / stride + 1, wo = (w + 2 * padding - kw) / stride + 1;
  if (ho <= 0 || wo <= 0) throw InvalidArgument("conv2d: input too small for the kernel");
  const ConvPrimitive& p = conv_primitive({n, c, h, w, o, kh, kw, stride, padding, has_bias});
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
