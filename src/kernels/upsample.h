// Nearest-neighbour resizing, fp32, on channels-last images [N, H, W, C] (the networks' layout).
#pragma once
#include <cstdint>

#include "core/compute_type.h"
#include "core/tensor.h"

namespace sdcpu {

// F.interpolate(x, size=(out_h, out_w), mode="nearest") on x [N, H, W, C] -> [N, out_h, out_w, C], where output
// row i reads input row min(floor(i * (H / out_h)), H - 1) with the ratio computed in float, as PyTorch's
// nearest_idx does (and exactly i / 2 when out_h == 2 H). diffusers' Upsample2D uses this form when the UNet
// forwards `upsample_size` because the latent is not divisible by 2**levels (e.g. 13x17 latents).
Tensor upsample_nearest(const Tensor& x, int64_t out_h, int64_t out_w);

// F.interpolate(scale_factor=2.0, mode="nearest"): [N, H, W, C] -> [N, 2H, 2W, C].
Tensor upsample_nearest_2x(const Tensor& x);

// upsample_nearest's values written to `out` (N * out_h * out_w * C of them, channels-last) as fp32 or rounded to
// bf16: the source buffer of the convolution that follows (Upsample2D), so the 4x larger upsampled image is not
// written in fp32 first.
void upsample_nearest_into(const Tensor& x, int64_t out_h, int64_t out_w, void* out, ComputeType out_type);

}  // namespace sdcpu
