// Pointwise activations, fp32, in place (they always follow an op whose output nobody else reads).
#pragma once
#include "core/tensor.h"

namespace sdcpu {

// x * sigmoid(x)  (torch.nn.SiLU)
void silu_(Tensor& x);
// 0.5 x (1 + erf(x / sqrt 2))  (torch.nn.GELU, exact form)
void gelu_(Tensor& x);
// x * sigmoid(1.702 x)  (CLIP's quick_gelu)
void quick_gelu_(Tensor& x);

// diffusers.models.activations.GEGLU after its projection: x [..., 2D] is split into hidden = x[..., :D]
// and gate = x[..., D:]; returns hidden * gelu(gate), [..., D]. Shazeer, "GLU Variants", 2020.
Tensor geglu(const Tensor& x);

}  // namespace sdcpu
