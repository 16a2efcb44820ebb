// The precision a network computes its convolutions, matmuls and attention products in (DESIGN.md principle 4).
// Norms, softmax statistics, accumulators, the scheduler and everything between the big products stay fp32 in
// every mode; bf16 means: weights stored and packed as bfloat16, activations rounded to bfloat16 at the inputs of
// the products, fp32 accumulation and fp32 outputs (as IPEX's and oneDNN's bf16 inference paths do).
#pragma once
#include <string>

namespace sdcpu {

enum class ComputeType { f32, bf16 };

inline const char* compute_type_name(ComputeType t) { return t == ComputeType::bf16 ? "bf16" : "fp32"; }

}  // namespace sdcpu
