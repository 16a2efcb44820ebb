// Normalization layers, fp32, vectorized and threaded. Statistics are summed in fp32 SIMD lanes over chunks
// (2048 values for layer norm, ~16K for group norm), shifted by the chunk's approximate mean so that a large mean
// costs no accuracy, and the chunks are merged in double; chunk boundaries do not depend on the thread count, so
// neither does the result. Measured within 1.4e-7 of the output scale of a double reference, also at mean 100 / std 1
// (test_kernels_reference).
#pragma once
#include "core/compute_type.h"
#include "core/tensor.h"

namespace sdcpu {

// torch.nn.GroupNorm on a channels-last tensor x [N, ..., C] (an image [N, H, W, C], as the networks hold them;
// tokens [N, L, C]): normalized over (C / groups) channels x all positions, then y = x_hat * gamma[c] + beta[c].
// With `silu`, y is followed by SiLU (the order every diffusers ResnetBlock2D uses: norm -> nonlinearity), fused
// to save a pass over memory. The statistics of a group come from its (C / groups)-channel slice of every pixel.
Tensor group_norm(const Tensor& x, int groups, const Tensor& gamma, const Tensor& beta, float eps, bool silu = false);

// The same values written to `out`, x.numel() of them in x's layout, as fp32 or rounded to bf16 (`out_type`): a
// convolution's source buffer, so the norm's output is never written as an fp32 tensor that a reorder then reads
// and rounds (kernels/conv2d.h, ConvSource).
void group_norm_into(const Tensor& x, int groups, const Tensor& gamma, const Tensor& beta, float eps, bool silu,
                     void* out, ComputeType out_type);

// torch.nn.LayerNorm over the last dimension: x [..., C], gamma/beta [C].
Tensor layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps);

}  // namespace sdcpu
