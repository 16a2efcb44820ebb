// The guidance-scale embedding of LCM-distilled UNets (Luo et al. 2023, "Latent Consistency Models", section 4.2:
// the guidance scale w is an input of the distilled model, embedded like a timestep, after Kingma et al.'s VDM).
// diffusers 0.27.2's LatentConsistencyModelPipeline and StableDiffusionPipeline compute it in
// get_guidance_scale_embedding(torch.tensor(guidance_scale - 1).repeat(batch), embedding_dim=time_cond_proj_dim)
// and pass it to the UNet as `timestep_cond`, where TimestepEmbedding.cond_proj adds it to the timestep embedding.
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace sdcpu {

// [batch, dim], every row the same: w = (guidance_scale - 1) * 1000; with half = dim / 2 and
// f_i = exp(-i * ln(10000) / (half - 1)), the row is [sin(w f_0), ..., sin(w f_{half-1}), cos(w f_0), ...], padded
// with one zero for an odd dim. Every operation in float32 as torch does it. ModelError for dim < 4 (torch divides by
// zero there).
Tensor guidance_scale_embedding(float guidance_scale, int64_t batch, int64_t dim);

}  // namespace sdcpu
