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

// Step caching (DeepCache: Ma, Fang and Wang, "DeepCache: Accelerating Diffusion Models for Free", CVPR 2024).
// The UNet's deep features change little from one denoising step to the next, so a "full" pass keeps the input of
// the up path at a chosen depth (the branch), and the "shallow" passes of the next steps run only the layers above
// it: conv_in, the down layers before the branch, the up layers from the branch on, conv_out. The branch numbers
// the cut as DeepCacheSDHelper's cache_branch_id does: block * (layers_per_block + 1) + layer, where layer
// layers_per_block is the block's downsampler. Branch 0 (the paper's usual choice) cuts before down block 0's
// first resnet: a shallow pass then runs only conv_in, the last up block's last resnet and attention, and conv_out.
//
// Exactly what DeepCacheSDHelper computes: on a cached step it serves, from its last full step, every module at or
// past the cut; the skip connections the up layers after the cut read all come from down layers before it, which
// run afresh, so the one tensor entering the up path at the cut is all that must be kept.
struct UNetStepCache {
  int branch = 0;
  // The hidden state that enters the first up layer at the branch, from the last full pass (channels-last,
  // [B, H, W, C]); empty until a full pass with this cache.
  Tensor deep_features;
};

class UNet2DConditionModel {
 public:
  // Loads every weight the configuration needs, packed once in the store's compute type (WeightStore).
  UNet2DConditionModel(const UNetConfig& config, const WeightStore& weights);

  // sample [B, in_channels, h, w] (any h, w >= 1: like diffusers, sizes not divisible by 2**levels are
  // upsampled to the skip connections' sizes), one timestep for the whole batch (a float, as diffusers
  // passes it), encoder_hidden_states [B, L, cross_attention_dim]. Returns [B, out_channels, h, w].
  // `tome`: token merging (nets/token_merging.h) in this pass, or none; its latent size must be the sample's.
  Tensor forward(const Tensor& sample, float timestep, const Tensor& encoder_hidden_states,
                 const TokenMergeContext* tome = nullptr) const;

  // What the UNet is conditioned on besides the timestep and the text: SDXL's added_cond_kwargs, for a UNet with
  // addition_embed_type "text_time" (UNetConfig::has_text_time), and an LCM-distilled UNet's timestep_cond.
  struct AddedConditions {
    Tensor text_embeds;  // [B, pooled dim]: the second text encoder's text_embeds
    Tensor time_ids;     // [B, 6]: original_size + crops_coords_top_left + target_size
    // [B, time_cond_proj_dim]: the guidance-scale embedding (diffusers' `timestep_cond`), added to the timestep
    // embedding through time_embedding.cond_proj; empty: none.
    Tensor timestep_cond;
  };
  // The same with added conditions; text_embeds and time_ids must be given exactly when the config has
  // "text_time".
  Tensor forward(const Tensor& sample, float timestep, const Tensor& encoder_hidden_states,
                 const AddedConditions& added, const TokenMergeContext* tome = nullptr) const;

  // A full pass that also keeps in `cache` the deep features at cache.branch (InvalidArgument for a branch past
  // deep_cache_branches()). The result equals forward()'s. The features may live in the caller's activation arena
  // (core/activation_arena.h): take them out of a pass with Pass::output before it ends.
  Tensor forward_and_cache(const Tensor& sample, float timestep, const Tensor& encoder_hidden_states,
                           UNetStepCache& cache, const AddedConditions& added = {},
                           const TokenMergeContext* tome = nullptr) const;
  // A shallow pass at `cache.branch`, reusing cache.deep_features (InvalidArgument when they are missing or were
  // kept for another batch or size).
  Tensor forward_shallow(const Tensor& sample, float timestep, const Tensor& encoder_hidden_states,
                         const UNetStepCache& cache, const AddedConditions& added = {},
                         const TokenMergeContext* tome = nullptr) const;
  // The number of step-caching branches: levels * (layers_per_block + 1); 12 for SD 1.x.
  int deep_cache_branches() const;

  const UNetConfig& config() const { return config_; }

 private:
  // time_embedding(time_proj(timestep)), plus add_embedding(concat(text_embeds, add_time_proj(time_ids))) with
  // "text_time" (UNet2DConditionModel.get_time_embed + get_aug_embed): [B, time_embed_dim].
  Tensor time_embedding(float timestep, int64_t batch, const AddedConditions& added) const;
  // Which passes run: every layer (full), or only those above the branch's cut (shallow).
  enum class PassKind { full, full_and_cache, shallow };
  // deep_features: where a full_and_cache pass keeps them, or what a shallow pass reuses (moved from).
  Tensor run(const Tensor& sample, float timestep, const Tensor& encoder_hidden_states, const AddedConditions& added,
             PassKind kind, int branch, Tensor* deep_features, const TokenMergeContext* tome) const;

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
