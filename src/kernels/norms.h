// Normalization layers, fp32. Statistics are accumulated in double so the result does not depend on
// the thread count or summation order beyond fp32 rounding of the output.
#pragma once
#include "core/tensor.h"

namespace sdcpu {

// torch.nn.GroupNorm: x [N, C, ...] normalized over (C / groups) channels x all spatial positions,
// then y = x_hat * gamma[c] + beta[c]. With `silu`, y is followed by SiLU (the order every diffusers
// ResnetBlock2D uses: norm -> nonlinearity), fused to save a pass over memory.
Tensor group_norm(const Tensor& x, int groups, const Tensor& gamma, const Tensor& beta, float eps, bool silu = false);

// torch.nn.LayerNorm over the last dimension: x [..., C], gamma/beta [C].
Tensor layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps);

}  // namespace sdcpu
