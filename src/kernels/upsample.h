// Nearest-neighbour resizing to an explicit size, fp32, NCHW.
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace sdcpu {

// F.interpolate(x, size=(out_h, out_w), mode="nearest"): [N, C, H, W] -> [N, C, out_h, out_w], where output
// row i reads input row min(floor(i * (H / out_h)), H - 1) with the ratio computed in float, as PyTorch's
// nearest_idx does (and exactly i / 2 when out_h == 2 H). diffusers' Upsample2D uses this form when the UNet
// forwards `upsample_size` because the latent is not divisible by 2**levels (e.g. 13x17 latents).
Tensor upsample_nearest(const Tensor& x, int64_t out_h, int64_t out_w);

}  // namespace sdcpu
