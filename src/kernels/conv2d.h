// 2-D convolution, fp32, NCHW, through oneDNN (torch.nn.functional.conv2d semantics, dilation 1,
// groups 1).
#pragma once
#include "core/tensor.h"

namespace sdcpu {

// x [N, C, H, W], weight [O, C, kh, kw], bias [O] or empty -> [N, O, Ho, Wo] with
// Ho = (H + 2 * padding - kh) / stride + 1.
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, int stride, int padding);

}  // namespace sdcpu
