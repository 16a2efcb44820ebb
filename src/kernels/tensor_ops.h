// Small data-movement and elementwise ops the networks need between the heavy layers.
#pragma once
#include "core/tensor.h"

namespace sdcpu {

// a + b, same shapes.
Tensor add(const Tensor& a, const Tensor& b);
// a += b, same shapes.
void add_(Tensor& a, const Tensor& b);
// x *= s
void scale_(Tensor& x, float s);
// x [N, C, H, W] += v [N, C] broadcast over H, W (the time embedding in ResnetBlock2D).
void add_channel_bias_(Tensor& x, const Tensor& v);

// [N, C, H, W] -> [N, H*W, C] (Transformer2DModel's flatten before linear projections)
Tensor nchw_to_nlc(const Tensor& x);
// [N, H*W, C] -> [N, C, H, W]
Tensor nlc_to_nchw(const Tensor& x, int64_t height, int64_t width);

// Nearest-neighbour 2x upsampling, [N, C, H, W] -> [N, C, 2H, 2W] (F.interpolate(scale_factor=2.0)).
Tensor upsample_nearest_2x(const Tensor& x);

// Concatenation along channels: [N, C1, ...] and [N, C2, ...] -> [N, C1 + C2, ...] (UNet skip connections).
Tensor concat_channels(const Tensor& a, const Tensor& b);

}  // namespace sdcpu
