#include "kernels/linear.h"

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
using Key = std::tuple<int64_t, int64_t, int64_t, bool>;

struct MatmulPrimitive {
  dnnl::matmul::primitive_desc pd;
  dnnl::matmul prim;
};

// `compute`: the data type of the source and the weights; the bias and the destination are always fp32 (in bf16
// the products accumulate in fp32 and the output is not rounded).
// With `residual`, dst = x W^T + b + 1.0 * dst (a sum post-op): the residual is in dst before the product.
// In int8 (s8 source and weights) the int32 products are scaled per output column by scales given at run time
// (DNNL_RUNTIME_F32_VAL), and oneDNN 2.x adds the bias before that scaling: dst = scale[n] * (acc + bias[n]).
// `weights`, when given, is the weight's layout (else `weight_tag`).
dnnl::matmul::primitive_desc matmul_pd(int64_t m, int64_t k, int64_t n, bool has_bias, Tag weight_tag,
                                       memory::data_type compute = kF32, bool residual = false,
                                       const memory::desc& weights = memory::desc()) {
  memory::desc src({m, k}, compute, Tag::ab);
  memory::desc wei = weights.is_zero() ? memory::desc({k, n}, compute, weight_tag) : weights;
  memory::desc dst({m, n}, kF32, Tag::ab);
  auto desc = has_bias ? dnnl::matmul::desc(src, wei, memory::desc({1, n}, kF32, Tag::ab), dst)
                       : dnnl::matmul::desc(src, wei, dst);
  dnnl::primitive_attr attr = with_user_scratchpad();
  if (compute == kS8) attr.set_output_scales(1 << 1, {DNNL_RUNTIME_F32_VAL});
  if (residual) {
    dnnl::post_ops ops;
    ops.append_sum(1.0f);
    attr.set_post_ops(ops);
  }
  return dnnl::matmul::primitive_desc(desc, attr, dnnl_engine());
}

const MatmulPrimitive& matmul_primitive(const Key& key) {
  static std::map<Key, MatmulPrimitive> cache;
  static std::mutex mutex;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  auto [m, k, n, has_bias] = key;
  // The weight is stored [N, K] (PyTorch's layout); oneDNN sees it as the [K, N] matrix W^T.
  const auto pd = matmul_pd(m, k, n, has_bias, Tag::ba);
  auto [pos, inserted] = cache.emplace(key, MatmulPrimitive{pd, dnnl::matmul(pd)});
  return pos->second;
}

// A one-value f32 memory over `value`, for a run-time scale.
memory scalar_memory(float* value) { return memory(memory::desc({1}, kF32, Tag::a), dnnl_engine(), value); }

void check_linear_args(const Shape& x, int64_t k) {
  if (x.empty() || x.back() != k)
    throw InvalidArgument("linear: input " + shape_to_string(x) + " does not fit " + std::to_string(k) +
                          " input features");
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
  const ScratchBuffer pad = add_scratchpad(p.pd, args);
  p.prim.execute(dnnl_stream(), args);
  dnnl_stream().wait();
  return y;
}

struct PreparedLinear::Weights {
  int64_t k = 0, n = 0;
  memory::data_type compute = kF32;  // of the source and the weight
  Tensor bias;                       // [N] or empty, as the [1, N] bias oneDNN reads
  std::vector<float> weight_scales;  // int8: per output column, weight[n, :] ~ weight_scales[n] * packed[:, n]
  std::mutex mutex;
  // The weight in every layout a primitive has asked for; in practice one (BA16a64b for every row count).
  PackedWeights packed;
  struct Plan {
    dnnl::matmul::primitive_desc pd;
    dnnl::matmul prim;
    const memory* weights = nullptr;
    memory::desc src_plain;        // our fp32 [m, k] rows
    dnnl::reorder src_to_compute;  // fp32 -> bf16 rounding of the rows, or int8 quantization (a run-time scale)
  };
  std::map<std::pair<int64_t, bool>, std::unique_ptr<Plan>> plans;  // by row count m, with a residual

  const Plan& plan(int64_t m, bool residual) {
    std::lock_guard<std::mutex> lock(mutex);
    auto it = plans.find({m, residual});
    if (it != plans.end()) return *it->second;
    auto plan = std::make_unique<Plan>();
    // int8: the one layout the weight is packed in (PackedWeights::packed_desc); others ask for their favourite.
    plan->pd = matmul_pd(m, k, n, !bias.empty(), Tag::any, compute, residual,
                         compute == kS8 ? packed.packed_desc() : memory::desc());
    plan->prim = dnnl::matmul(plan->pd);
    plan->weights = packed.in(plan->pd.weights_desc());
    plan->src_plain = memory::desc({m, k}, kF32, Tag::ab);
    if (plan->pd.src_desc() != plan->src_plain) {
      dnnl::primitive_attr attr;
      if (compute == kS8) attr.set_output_scales(0, {DNNL_RUNTIME_F32_VAL});  // 1 / the input's scale
      plan->src_to_compute = dnnl::reorder(dnnl::reorder::primitive_desc(dnnl_engine(), plan->src_plain, dnnl_engine(),
                                                                         plan->pd.src_desc(), attr));
    }
    auto [pos, inserted] = plans.emplace(std::make_pair(m, residual), std::move(plan));
    return *pos->second;
  }
};

PreparedLinear::PreparedLinear(const WeightSource& weight, const Tensor& bias, ComputeType compute)
    : weights_(std::make_shared<Weights>()) {
  if (weight.shape.size() != 2)
    throw InvalidArgument("linear: weight must be [N, K], got " + shape_to_string(weight.shape));
  if (!bias.empty() && bias.numel() != weight.shape[0]) throw InvalidArgument("linear: bias size mismatch");
  Weights& wt = *weights_;
  wt.n = weight.shape[0];
  wt.k = weight.shape[1];
  if (!bias.empty()) wt.bias = bias.reshape({1, wt.n}).clone();
  // Pack now into the layout the primitive for a representative row count asks for; with AVX-512 oneDNN 2.6
  // wants BA16a64b for every m (checked with ONEDNN_VERBOSE from 1 to 8192 rows), and a plan that wants another
  // layout gets its own copy reordered from this one, so the plain weight need not be kept.
  wt.compute = compute == ComputeType::int8 ? kS8 : compute == ComputeType::bf16 ? kBF16 : kF32;
  auto pd = matmul_pd(256, wt.k, wt.n, !bias.empty(), Tag::any, wt.compute);
  // Without a fast kernel for this shape on this CPU oneDNN would use its reference code: int8 falls back to
  // bf16, bf16 to fp32.
  if (wt.compute == kS8 && is_reference_implementation(pd)) {
    wt.compute = kBF16;
    pd = matmul_pd(256, wt.k, wt.n, !bias.empty(), Tag::any, wt.compute);
  }
  if (wt.compute == kBF16 && is_reference_implementation(pd)) {
    wt.compute = kF32;
    pd = matmul_pd(256, wt.k, wt.n, !bias.empty(), Tag::any, wt.compute);
  }
  // PyTorch's [N, K] is oneDNN's [K, N] matrix W^T in format ba.
  const memory::desc plain({wt.k, wt.n}, kF32, Tag::ba);
  if (wt.compute == kS8)
    wt.weight_scales = wt.packed.pack_int8(weight, plain, pd.weights_desc(), /*out_dim=*/1);
  else
    wt.packed.pack(weight, plain, pd.weights_desc());
}

int64_t PreparedLinear::in_features() const { return weights_ ? weights_->k : 0; }
int64_t PreparedLinear::out_features() const { return weights_ ? weights_->n : 0; }
ComputeType PreparedLinear::compute_type() const {
  if (!weights_) return ComputeType::f32;
  return weights_->compute == kS8 ? ComputeType::int8 : weights_->compute == kBF16 ? ComputeType::bf16 : ComputeType::f32;
}

Tensor linear(const Tensor& x, const PreparedLinear& layer, Tensor residual) {
  if (layer.empty()) throw InvalidArgument("linear: empty layer");
  PreparedLinear::Weights& wt = *layer.weights_;
  check_linear_args(x.shape(), wt.k);
  const int64_t m = x.numel() / wt.k;
  Shape out_shape = x.shape();
  out_shape.back() = wt.n;
  const bool has_residual = !residual.empty();
  if (has_residual && residual.shape() != out_shape)
    throw InvalidArgument("linear: residual " + shape_to_string(residual.shape()) + " does not match the output " +
                          shape_to_string(out_shape));
  // The product adds into the residual itself, or into a copy when others hold it.
  Tensor y = has_residual ? residual.unshared() : Tensor(out_shape);
  if (m == 0) return y;
  const auto& plan = wt.plan(m, has_residual);
  auto& eng = dnnl_engine();
  memory src(plan.src_plain, eng, const_cast<float*>(x.data()));
  const bool int8 = wt.compute == kS8;
  // int8: the input's one scale (kernels/quantize.h), and per output column the scale of its products, and the
  // bias divided by it (oneDNN adds the bias before scaling; see matmul_pd).
  float inverse_input_scale = 1.0f;
  ScratchBuffer scales_buffer;
  float *output_scales = nullptr, *scaled_bias = nullptr;
  if (int8) {
    const float input_scale = int8_scale(max_abs(x.data(), x.numel()));
    inverse_input_scale = 1.0f / input_scale;
    scales_buffer = ScratchBuffer(ScratchSlot::int8_scales, 2 * wt.n * sizeof(float));
    output_scales = static_cast<float*>(scales_buffer.data());
    scaled_bias = output_scales + wt.n;
    for (int64_t j = 0; j < wt.n; ++j) output_scales[j] = input_scale * wt.weight_scales[j];
    if (!wt.bias.empty())
      for (int64_t j = 0; j < wt.n; ++j) scaled_bias[j] = wt.bias.data()[j] / output_scales[j];
  }
  ScratchBuffer rounded_buffer;
  if (plan.src_to_compute) {
    rounded_buffer = ScratchBuffer(ScratchSlot::linear_src, plan.pd.src_desc().get_size());
    memory rounded(plan.pd.src_desc(), eng, rounded_buffer.data());
    std::unordered_map<int, memory> reorder_args = {{DNNL_ARG_FROM, src}, {DNNL_ARG_TO, rounded}};
    if (int8) reorder_args[DNNL_ARG_ATTR_OUTPUT_SCALES] = scalar_memory(&inverse_input_scale);
    plan.src_to_compute.execute(dnnl_stream(), reorder_args);
    src = rounded;
  }
  std::unordered_map<int, memory> args = {{DNNL_ARG_SRC, src},
                                          {DNNL_ARG_WEIGHTS, *plan.weights},
                                          {DNNL_ARG_DST, memory(plan.pd.dst_desc(), eng, y.data())}};
  if (!wt.bias.empty())
    args[DNNL_ARG_BIAS] = memory(plan.pd.bias_desc(), eng, int8 ? scaled_bias : wt.bias.data());
  if (int8)
    args[DNNL_ARG_ATTR_OUTPUT_SCALES] =
        memory(memory::desc({wt.n}, kF32, Tag::a), eng, output_scales);
  const ScratchBuffer pad = add_scratchpad(plan.pd, args);
  plan.prim.execute(dnnl_stream(), args);
  dnnl_stream().wait();
  return y;
}

}  // namespace sdcpu
