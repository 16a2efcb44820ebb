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
  Tensor forward(const Tensor& sample, float timestep, const Tensor& encoder_hidden_states) const;

  // SDXL's added_cond_kwargs, for a UNet with addition_embed_type "text_time" (UNetConfig::has_text_time).
  struct AddedConditions {
    Tensor text_embeds;  // [B, pooled dim]: the second text encoder's text_embeds
    Tensor time_ids;     // [B, 6]: original_size + crops_coords_top_left + target_size
  };
  // The same with added conditions; they must be given exactly when the config has "text_time".
  Tensor forward(const Tensor& sample, float timestep, const Tensor& encoder_hidden_states,
                 const AddedConditions& added) const;

  const UNetConfig& config() const { return config_; }

 private:
  // time_embedding(time_proj(timestep)), plus add_embedding(concat(text_embeds, add_time_proj(time_ids))) with
  // "text_time" (UNet2DConditionModel.get_time_embed + get_aug_embed): [B, time_embed_dim].
  Tensor time_embedding(float timestep, int64_t batch, const AddedConditions& added) const;

  UNetConfig config_;
  int64_t time_embed_dim_ = 0;              // block_out_channels[0] * 4
  unet::TimestepEmbedding time_embedding_;  // time_proj (Timesteps) has no weights: unet::timestep_embedding
  unet::TimestepEmbedding add_embedding_;   // "text_time" only; add_time_proj has no weights either
  Conv2d conv_in_;
  std::vector<unet::DownBlock> down_blocks_;
  unet::MidBlock mid_block_;
  std::vector<unet::UpBlock> up_blocks_;
  GroupNorm conv_norm_out_;  // followed by conv_act (SiLU), fused
  Conv2d conv_out_;
};

}  // namespace sdcpu
