#include "kernels/linear.h"

#include <map>
#include <mutex>
#include <tuple>

#include "core/error.h"
#include "kernels/dnnl_context.h"

namespace sdcpu {
namespace {

using dnnl::memory;
using Key = std::tuple<int64_t, int64_t, int64_t, bool>;

struct MatmulPrimitive {
  dnnl::matmul::primitive_desc pd;
  dnnl::matmul prim;
};

const MatmulPrimitive& matmul_primitive(const Key& key) {
  static std::map<Key, MatmulPrimitive> cache;
  static std::mutex mutex;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  auto [m, k, n, has_bias] = key;
  memory::desc src({m, k}, memory::data_type::f32, memory::format_tag::ab);
  // The weight is stored [N, K] (PyTorch's layout); oneDNN sees it as the [K, N] matrix W^T.
  memory::desc wei({k, n}, memory::data_type::f32, memory::format_tag::ba);
  memory::desc bia({1, n}, memory::data_type::f32, memory::format_tag::ab);
  memory::desc dst({m, n}, memory::data_type::f32, memory::format_tag::ab);
  auto desc = has_bias ? dnnl::matmul::desc(src, wei, bia, dst) : dnnl::matmul::desc(src, wei, dst);
  dnnl::matmul::primitive_desc pd(desc, dnnl_engine());
  auto [pos, inserted] = cache.emplace(key, MatmulPrimitive{pd, dnnl::matmul(pd)});
  return pos->second;
}

}  // namespace

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  if (x.ndim() < 1 || weight.ndim() != 2 || x.dim(-1) != weight.dim(1))
    throw InvalidArgument("linear: input " + shape_to_string(x.shape()) + " and weight " +
                          shape_to_string(weight.shape()) + " do not fit");
  const bool has_bias = !bias.empty();
  if (has_bias && bias.numel() != weight.dim(0)) throw InvalidArgument("linear: bias size mismatch");
  const int64_t k = weight.dim(1), n = weight.dim(0), m = x.numel() / k;
  Shape out_shape = x.shape();
  out_shape.back() = n;
  Tensor y(out_shape);
  if (m == 0) return y;
  const MatmulPrimitive& p = matmul_primitive({m, k, n, has_bias});
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
