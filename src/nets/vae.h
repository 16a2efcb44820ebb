// The Stable Diffusion autoencoder (diffusers.AutoencoderKL; Rombach et al., "High-Resolution Image
// Synthesis with Latent Diffusion Models", 2022), in the weight store's compute type: the decoder turns latents into
// images, the encoder images into the latent distribution (img2img). Built entirely from VaeConfig; weights by their
// diffusers names ("decoder.up_blocks.0.resnets.1.conv1.weight", ...).
#pragma once
#include <vector>

#include "core/tensor.h"
#include "formats/model_config.h"
#include "formats/weight_store.h"
#include "nets/layers.h"
#include "nets/resnet_block.h"

namespace sdcpu {

// diffusers.models.attention_processor.Attention as the VAE mid block builds it (_from_deprecated_attn_block):
// group norm, q/k/v/out linears with bias over the H*W positions, a residual connection,
// rescale_output_factor 1.
struct VaeAttentionBlock {
  GroupNorm group_norm;
  Linear to_q, to_k, to_v, to_out;
  int heads = 1;
  static VaeAttentionBlock load(const WeightStore& w, const std::string& prefix, int64_t channels, int heads,
                                int groups, float eps);
  Tensor operator()(const Tensor& x) const;  // [N, C, H, W] -> [N, C, H, W]
};

// diffusers.models.unets.unet_2d_blocks.UNetMidBlock2D without time embedding: resnet, attention, resnet.
struct VaeMidBlock {
  ResnetBlock2D resnet0, resnet1;
  VaeAttentionBlock attention;
  static VaeMidBlock load(const WeightStore& w, const std::string& prefix, int64_t channels, int groups, float eps);
  Tensor operator()(const Tensor& x) const;
};

class VaeDecoder {
 public:
  VaeDecoder(const VaeConfig& config, const WeightStore& weights);
  // latent [B, latent_channels, h, w], already divided by scaling_factor (the pipeline does that)
  // -> image [B, out_channels, h * 2^(levels-1), w * 2^(levels-1)] in about [-1, 1], not clamped.
  Tensor forward(const Tensor& latent) const;
  const VaeConfig& config() const { return config_; }

 private:
  // diffusers UpDecoderBlock2D: layers_per_block + 1 resnets, then nearest 2x + 3x3 conv (not in the last).
  struct UpBlock {
    std::vector<ResnetBlock2D> resnets;
    Conv2d upsampler;  // empty(): no upsampler
  };
  VaeConfig config_;
  Conv2d post_quant_conv_, conv_in_, conv_out_;
  VaeMidBlock mid_block_;
  std::vector<UpBlock> up_blocks_;
  GroupNorm conv_norm_out_;
};

class VaeEncoder {
 public:
  VaeEncoder(const VaeConfig& config, const WeightStore& weights);
  // The latent distribution (diffusers DiagonalGaussianDistribution), not scaled by scaling_factor.
  struct Output {
    Tensor mean, std;  // [B, latent_channels, H / 2^(levels-1), W / 2^(levels-1)]
  };
  // image [B, in_channels, H, W] in [-1, 1].
  Output forward(const Tensor& image) const;
  const VaeConfig& config() const { return config_; }

 private:
  // diffusers DownEncoderBlock2D: layers_per_block resnets, then a stride-2 3x3 conv (not in the last).
  struct DownBlock {
    std::vector<ResnetBlock2D> resnets;
    Conv2d downsampler;  // empty(): no downsampler
  };
  VaeConfig config_;
  Conv2d conv_in_, conv_out_, quant_conv_;
  std::vector<DownBlock> down_blocks_;
  VaeMidBlock mid_block_;
  GroupNorm conv_norm_out_;
};

}  // namespace sdcpu
