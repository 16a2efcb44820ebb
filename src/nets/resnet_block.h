// diffusers.models.resnet.ResnetBlock2D (He et al., "Deep Residual Learning", 2016, in the pre-norm form of
// Ho et al., "Denoising Diffusion Probabilistic Models", 2020), the residual unit of both the VAE
// (Encoder/Decoder, no time embedding) and the UNet (with a time embedding). Only the configuration Stable
// Diffusion uses: time_embedding_norm "default" (the embedding is added), SiLU, no up/down sampling inside
// the block, a 1x1 conv_shortcut when the channel count changes.
#pragma once
#include <string>

#include "core/tensor.h"
#include "formats/weight_store.h"
#include "nets/layers.h"

namespace sdcpu {

struct ResnetBlock2D {
  GroupNorm norm1, norm2;
  Conv2d conv1, conv2;
  Linear time_emb_proj;  // empty(): the block has no time embedding (temb_channels = None)
  Conv2d conv_shortcut;  // empty(): in_channels == out_channels, identity shortcut
  float output_scale_factor = 1.0f;

  // `prefix` is the module path, e.g. "decoder.up_blocks.0.resnets.1". temb_channels 0 means none.
  static ResnetBlock2D load(const WeightStore& w, const std::string& prefix, int64_t in_channels, int64_t out_channels,
                            int groups, float eps, int64_t temb_channels = 0, float output_scale_factor = 1.0f);

  // x [N, H, W, in] (channels-last, nets/layers.h); temb [N, temb_channels] as the model's time embedding
  // produces it (SiLU is applied here, as ResnetBlock2D.forward does), or empty when the block has none.
  // Returns [N, H, W, out] =
  // (shortcut(x) + conv2(silu(norm2(conv1(silu(norm1(x))) + proj(silu(temb)))))) / output_scale_factor.
  Tensor operator()(const Tensor& x, const Tensor& temb = Tensor()) const;
};

}  // namespace sdcpu
