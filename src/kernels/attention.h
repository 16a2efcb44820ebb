// Multi-head scaled dot-product attention, fp32 (torch.nn.functional.scaled_dot_product_attention).
#pragma once
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
Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, int heads, bool causal = false);

}  // namespace sdcpu
