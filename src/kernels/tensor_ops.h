// Small data-movement and elementwise ops the networks need between the heavy layers. Images are channels-last,
// [N, H, W, C], as the networks hold them.
#pragma once
#include "core/tensor.h"

namespace sdcpu {

// a + b, same shapes.
Tensor add(const Tensor& a, const Tensor& b);
// a += b, same shapes.
void add_(Tensor& a, const Tensor& b);
// x *= s
void scale_(Tensor& x, float s);
// x [N, ..., C] += v [N, C] broadcast over the positions (the time embedding in ResnetBlock2D).
void add_channel_bias_(Tensor& x, const Tensor& v);

// Concatenation along channels, the last dimension: [N, ..., C1] and [N, ..., C2] -> [N, ..., C1 + C2]
// (torch.cat(dim=1) of the UNet's skip connections, on channels-last images).
Tensor concat_channels(const Tensor& a, const Tensor& b);

}  // namespace sdcpu
