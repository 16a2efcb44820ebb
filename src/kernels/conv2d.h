// 2-D convolution, fp32, NCHW, through oneDNN (torch.nn.functional.conv2d semantics, dilation 1,
// groups 1).
#pragma once
#include "core/tensor.h"

namespace sdcpu {

// x [N, C, H, W], weight [O, C, kh, kw], bias [O] or empty -> [N, O, Ho, Wo] with
// Ho = (H + 2 * padding - kh) / stride + 1.
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, int stride, int padding);

// The same with separate zero padding on each side: equals F.conv2d(F.pad(x, (left, right, top, bottom)), ...,
// padding=0) without the padded copy. diffusers' Downsample2D with padding=0 (the VAE encoder) pads (0, 1, 0, 1).
// Ho = (H + pad_top + pad_bottom - kh) / stride + 1, Wo likewise.
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, int stride, int pad_top, int pad_left,
              int pad_bottom, int pad_right);

}  // namespace sdcpu
