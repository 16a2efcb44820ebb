// Fully connected layer on fp32 tensors, through oneDNN matmul (torch.nn.functional.linear semantics); the
// prepared path computes in fp32, bf16 or int8 (core/compute_type.h).
//
// Two paths:
// - linear(x, weight, bias): the weight as PyTorch stores it ([N, K], read by oneDNN as format `ba`); for
//   one-off calls.
// - PreparedLinear: the weight reordered once into the blocked layout oneDNN's brgemm matmul asks for when
//   given format_tag::any (BA16a64b with AVX-512; dev_guide_matmul, "the weights memory format `any`"), and
//   the primitives created once per row count. Measured on this machine (Xeon, AVX-512, oneDNN 2.6, 2 threads):
//   7-12% faster at the UNet's token shapes, 5x for the time embedding's two-row products.
#pragma once
#include <memory>

#include "core/compute_type.h"
#include "core/tensor.h"
#include "kernels/packed_weights.h"

namespace sdcpu {

// x [..., K], weight [N, K], bias [N] or empty -> [..., N] = x W^T + b.
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias);

// A linear layer with its weight prepacked once. Copies share the packed weight and the primitive cache
// (guarded by a mutex: one object may be used from several threads).
class PreparedLinear {
 public:
  PreparedLinear() = default;
  // weight [N, K], bias [N] or empty. Packs the weight now (the plain tensor is not kept), in fp32 or, with
  // `compute` = bf16, as bfloat16: the input rows are then rounded to bf16 too; accumulation, bias and output
  // stay fp32. With `compute` = int8 the weight is packed as int8 with one scale per output feature, and each
  // input is quantized with one scale computed from it (kernels/quantize.h); int32 accumulation, fp32 output.
  // Without a fast kernel on this CPU int8 falls back to bf16 and bf16 to fp32 (compute_type() tells).
  PreparedLinear(const Tensor& weight, const Tensor& bias, ComputeType compute = ComputeType::f32)
      : PreparedLinear(WeightSource::of(weight), bias, compute) {}
  // The same with the weight read only if `weight.cache` has no packed copy (kernels/packed_weights.h).
  PreparedLinear(const WeightSource& weight, const Tensor& bias, ComputeType compute = ComputeType::f32);

  bool empty() const { return weights_ == nullptr; }
  int64_t in_features() const;
  int64_t out_features() const;
  ComputeType compute_type() const;

  struct Weights;  // packed weight + per-row-count primitives, shared by copies

 private:
  friend Tensor linear(const Tensor& x, const PreparedLinear& layer, Tensor residual);
  std::shared_ptr<Weights> weights_;
};

// x [..., K] -> [..., N] = x W^T + b, + residual [..., N] when given (added after the bias by the product's sum
// post-op: the transformer blocks' `attn(norm(x)) + x`). A residual whose storage no other tensor shares (passed
// with std::move) becomes the output: the product adds into it, nothing is copied.
Tensor linear(const Tensor& x, const PreparedLinear& layer, Tensor residual = Tensor());

}  // namespace sdcpu
