// diffusers.models.unets.unet_2d_condition.UNet2DConditionModel (Ronneberger et al., "U-Net", 2015, as used
// for latent diffusion by Rombach et al., "High-Resolution Image Synthesis with Latent Diffusion Models",
// 2022), in the weight store's compute type (fp32 or bf16): the noise predictor of Stable Diffusion 1.x/2.x. Built
// entirely from a UNetConfig; every weight is fetched by its diffusers checkpoint name
// ("down_blocks.0.attentions.1.proj_in.weight", ...), so a missing or mis-shaped tensor is a ModelError naming it.
#pragma once
#include <vector>

#include "core/tensor.h"
#include "formats/model_config.h"
#include "formats/weight_store.h"
#include "nets/layers.h"
#include "nets/unet_blocks.h"

namespace sdcpu {

class UNet2DConditionModel {
 public:
  // Loads every weight the configuration needs, packed once in the store's compute type (WeightStore).
  UNet2DConditionModel(const UNetConfig& config, const WeightStore& weights);

  // sample [B, in_channels, h, w] (any h, w >= 1: like diffusers, sizes not divisible by 2**levels are
  // upsampled to the skip connections' sizes), one timestep for the whole batch (a float, as diffusers
  // passes it), encoder_hidden_states [B, L, cross_attention_dim]. Returns [B, out_channels, h, w].
  // timestep_cond [B, time_cond_proj_dim]: an LCM-distilled UNet's guidance-scale embedding (diffusers'
  // `timestep_cond`), added to the timestep embedding through time_embedding.cond_proj; empty: none.
  Tensor forward(const Tensor& sample, float timestep, const Tensor& encoder_hidden_states,
                 const Tensor& timestep_cond = {}) const;

  const UNetConfig& config() const { return config_; }

 private:
  UNetConfig config_;
  int64_t time_embed_dim_ = 0;              // block_out_channels[0] * 4
  unet::TimestepEmbedding time_embedding_;  // time_proj (Timesteps) has no weights: unet::timestep_embedding
  Conv2d conv_in_;
  std::vector<unet::DownBlock> down_blocks_;
  unet::MidBlock mid_block_;
  std::vector<unet::UpBlock> up_blocks_;
  GroupNorm conv_norm_out_;  // followed by conv_act (SiLU), fused
  Conv2d conv_out_;
};

}  // namespace sdcpu
