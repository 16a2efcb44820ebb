// Single-file Stable Diffusion checkpoints (.safetensors in the original CompVis/LDM layout, as
// AUTOMATIC1111, ComfyUI and model sites use them), opened as if they were a diffusers folder: the
// tensor names are mapped by formats/single_file_keys.h, the configurations derived from the shapes.
#pragma once
#include <string>

#include "formats/model_files.h"

namespace sdcpu {

// Opens `path` (an existing .safetensors file). Throws ModelError when it holds no usable SD model.
ModelFiles open_single_file(const std::string& path);

// The scheduler config diffusers uses for SD 1.x checkpoints that carry none: the PNDMScheduler
// scheduler_config.json of runwayml/stable-diffusion-v1-5 (scaled_linear 0.00085..0.012, 1000 steps,
// steps_offset 1, skip_prk_steps).
const std::string& sd1_scheduler_config_json();

}  // namespace sdcpu
