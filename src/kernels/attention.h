// Multi-head scaled dot-product attention, fp32 or bf16 products (torch.nn.functional.scaled_dot_product_attention).
#pragma once
#include "core/compute_type.h"
#include "core/tensor.h"

namespace sdcpu {

// q [B, Lq, H*D], k and v [B, Lk, H*D] with heads interleaved in the last dimension exactly as the
// projections produce them (head h = columns [h*D, (h+1)*D)), so no transposes are needed.
// Returns [B, Lq, H*D] = softmax(q k^T / sqrt(D) + mask) v per head. With `causal`, query i sees keys
// j <= i only (CLIP's text transformer).
//
// Fused, FlashAttention-style (Dao et al. 2022): blocks of queries against blocks of keys with an online softmax
// (Milakov & Gimelshein 2018), so the Lq x Lk score matrix is never materialized; register-blocked SIMD
// micro-kernels (src/kernels/attention_microkernels.h, AVX-512 or AVX2) and OpenMP over (batch, head, query
// block). Within 1e-5 of a double-precision reference relative to the output scale (tests/test_kernels_attention).
//
// ComputeType::bf16: the two products take bfloat16 inputs with fp32 accumulation, as oneDNN's and IPEX's bf16
// attention do: Q pre-scaled by 1/sqrt(D), K, V and the probabilities P are rounded to bf16 (to nearest even),
// multiplied pairwise by AVX512_BF16's vdpbf16ps (src/kernels/attention_microkernels_bf16.h); the softmax
// statistics (max, exp, sums, rescaling) and the output stay fp32. Inputs and output are fp32 tensors either way.
// Within 2e-2 of the double reference relative to the output scale, typically a few 1e-3 (8-bit mantissas:
// 2^-9 relative rounding per input; tests/test_kernels_attention). Where the build lacks AVX512_BF16
// (__AVX512BF16__ undefined; the project builds with -march=native), a bf16 request runs the fp32 kernel: it is
// no emulation, the result is the fp32 one (more accurate, not faster); attention_bf16_native() says which.
Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, int heads, bool causal = false,
                 ComputeType type = ComputeType::f32);

// Whether ComputeType::bf16 runs the vdpbf16ps kernel (true) or falls back to fp32 (false) in this build.
bool attention_bf16_native();

}  // namespace sdcpu
