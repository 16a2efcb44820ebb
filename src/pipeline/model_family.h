// Model families (DESIGN.md principle 8: a family is a description, not a branch). The networks are built from their
// configs whatever the family; what a family adds is how it is meant to be run: the defaults diffusers' pipeline or
// the model's publisher use (size, steps, guidance, sampler), chosen once at load and applied by the callers to the
// options a user did not give. How the pipeline runs a model follows from its files, never from the family name:
// an LCM UNet (time_cond_proj_dim) takes its guidance embedding whichever family is chosen.
//
//   sd1       SD 1.x (CLIP ViT-L, 768-wide cross attention)        sample_size x 8, 20 steps, guidance 7.5, dpmpp_2m
//   sd2       SD 2.x, epsilon prediction (stable-diffusion-2-base)  as sd1
//   sd2-v     SD 2.x, v_prediction (stable-diffusion-2, 768x768)    as sd1
//   sd-turbo  adversarially distilled SD 2.1 (stabilityai/sd-turbo) 1 step, guidance 0 (no unconditional pass), the
//             folder's own sampler (Euler, timestep_spacing "trailing")
//   sdxl      SDXL base 1.0 (two text encoders, text_time UNet)     1024x1024 (sample_size 128), guidance 5 (diffusers'
//             StableDiffusionXLPipeline default), 20 steps, dpmpp_2m
//   sdxl-turbo  SDXL with timestep_spacing "trailing" (stabilityai/sdxl-turbo) as sd-turbo, 512x512 (sample_size 64)
//   lcm       LCM-distilled (SimianLuo/LCM_Dreamshaper_v7)          4 steps, guidance 8.5 (embedded, one pass), lcm
#pragma once
#include <string>
#include <vector>

#include "formats/model_files.h"
#include "schedulers/scheduler_config.h"
#include "sdcpu/sdcpu.h"  // struct ModelFamily, model_family_names()

namespace sdcpu {

// The family the files describe (see the top of this file for the rules; `scheduler` is the model's stored
// scheduler config).
ModelFamily detect_model_family(const ModelFiles& files, const StoredSchedulerConfig& scheduler);

// Family `name` for these files, as the user chose it (`--family`). InvalidArgument for an unknown name.
ModelFamily model_family_named(const std::string& name, const ModelFiles& files,
                               const StoredSchedulerConfig& scheduler);

}  // namespace sdcpu
