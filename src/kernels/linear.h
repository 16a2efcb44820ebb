// Fully connected layer, fp32, through oneDNN matmul (torch.nn.functional.linear semantics).
#pragma once
#include "core/tensor.h"

namespace sdcpu {

// x [..., K], weight [N, K], bias [N] or empty -> [..., N] = x W^T + b.
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias);

}  // namespace sdcpu
