// The precision a network computes its convolutions, matmuls and attention products in (DESIGN.md principle 4).
// Norms, softmax statistics, accumulators, the scheduler and everything between the big products stay fp32 in
// every mode; bf16 means: weights stored and packed as bfloat16, activations rounded to bfloat16 at the inputs of
// the products, fp32 accumulation and fp32 outputs (as IPEX's and oneDNN's bf16 inference paths do).
//
// int8 means: the convolutions and linear layers take int8 weights (symmetric, one scale per output channel,
// computed once at load) and int8 activations (symmetric, one scale per tensor, computed from each input as it
// comes: "dynamic" quantization, no calibration data), multiply them with int32 accumulation (AVX512-VNNI
// vpdpbusd, AMX-INT8) and write fp32 outputs, as NNCF/OpenVINO's and IPEX's int8 paths do. The attention
// products and the layers a model's int8 policy keeps out (pipeline/int8_policy.h) compute in bf16.
#pragma once
#include <string>

namespace sdcpu {

enum class ComputeType { f32, bf16, int8 };

inline const char* compute_type_name(ComputeType t) {
  return t == ComputeType::int8 ? "int8" : t == ComputeType::bf16 ? "bf16" : "fp32";
}

// What computes in place of int8 where int8 does not apply (the attention products, the layers kept out of int8,
// the networks other than the UNet): bf16. Other types are their own.
inline ComputeType without_int8(ComputeType t) { return t == ComputeType::int8 ? ComputeType::bf16 : t; }

}  // namespace sdcpu
