// Multi-head scaled dot-product attention, fp32 (torch.nn.functional.scaled_dot_product_attention).
#pragma once
#include "core/tensor.h"

namespace sdcpu {

// q [B, Lq, H*D], k and v [B, Lk, H*D] with heads interleaved in the last dimension exactly as the
// projections produce them (head h = columns [h*D, (h+1)*D)), so no transposes are needed.
// Returns [B, Lq, H*D] = softmax(q k^T / sqrt(D) + mask) v per head. With `causal`, query i sees keys
// j <= i only (CLIP's text transformer).
//
// Queries are processed in tiles with an online softmax (Milakov & Gimelshein 2018; FlashAttention,
// Dao et al. 2022), so the Lq x Lk score matrix is never materialized.
Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, int heads, bool causal = false);

}  // namespace sdcpu
