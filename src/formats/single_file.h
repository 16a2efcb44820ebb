// Single-file Stable Diffusion checkpoints (.safetensors in the original CompVis/LDM layout, as
// AUTOMATIC1111, ComfyUI and model sites use them), opened as if they were a diffusers folder: the
// tensor names are mapped by formats/single_file_keys.h, the configurations derived from the shapes.
#pragma once
#include <string>

#include "formats/model_files.h"

namespace sdcpu {

// Opens `path` (an existing .safetensors file). Throws ModelError when it holds no usable SD model.
ModelFiles open_single_file(const std::string& path);

// The scheduler config diffusers 0.27.2 gives an SD 1.x checkpoint that carries none (StableDiffusionPipeline.
// from_single_file: loaders/single_file_utils.py, get_default_scheduler_config() as create_scheduler_from_ldm
// completes it, loaded into a DDIMScheduler): scaled_linear 0.00085..0.012, 1000 steps, "leading" spacing,
// steps_offset 1, clip_sample and set_alpha_to_one false, skip_prk_steps, epsilon prediction. Every key is set
// explicitly, so each carries over to whichever sampler is picked.
const std::string& sd1_single_file_scheduler_config_json();

}  // namespace sdcpu
