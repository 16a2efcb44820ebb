// Single-file Stable Diffusion checkpoints (.safetensors in the original CompVis/LDM layout, as
// AUTOMATIC1111, ComfyUI and model sites use them), opened as if they were a diffusers folder: the
// tensor names are mapped by formats/single_file_keys.h, the configurations derived from the shapes.
#pragma once
#include <string>

#include "formats/model_files.h"
#include "formats/single_file_keys.h"

namespace sdcpu {

// Opens `path` (an existing .safetensors file). Throws ModelError when it holds no usable SD model.
// The prediction type is `prediction_type` when given ("epsilon" | "v_prediction"), else what the original config
// says: the .yaml with the file's stem beside it (`parameterization: "v"`), else the one diffusers 0.27.2 infers
// (v2-inference-v.yaml, so v-prediction, when the UNet's input_blocks.2.1 cross-attention is 1024 wide; else
// v1-inference.yaml, epsilon). A global_step tensor of 875000 (SD 2.x base) turns a "v" config into epsilon, as
// in diffusers. ModelFiles::prediction_type_reason says which applied.
ModelFiles open_single_file(const std::string& path, const std::string& prediction_type = "");

class SafetensorsFile;

// What diffusers 0.27.2's StableDiffusionPipeline.from_single_file takes from the original config: the one given
// (here: the .yaml beside the file), else the one infer_original_config_file picks, v2-inference-v.yaml or
// v1-inference.yaml; then set_image_size and create_scheduler_from_ldm. An explicit prediction type
// (from_single_file(prediction_type=...), sdcpu's --prediction-type) overrides the config's.
struct SingleFileSettings {
  SingleFileHints hints;
  std::string prediction_type;  // "epsilon" | "v_prediction"
  std::string reason;           // for `sdcpu info`: which of the above decided it
  double beta_start = 0.00085, beta_end = 0.012;
};
// `file` is `path` opened. Throws ModelError for an unreadable or invalid .yaml.
SingleFileSettings single_file_settings(const std::string& path, const SafetensorsFile& file,
                                        const std::string& prediction_type);

// The scheduler config diffusers 0.27.2 gives a single-file checkpoint (StableDiffusionPipeline.from_single_file:
// loaders/single_file_utils.py, get_default_scheduler_config() as create_scheduler_from_ldm completes it, loaded
// into a DDIMScheduler): scaled_linear beta_start..beta_end, 1000 steps, "leading" spacing, steps_offset 1,
// clip_sample and set_alpha_to_one false, skip_prk_steps, and the prediction type. Every key is set explicitly,
// so each carries over to whichever sampler is picked.
std::string single_file_scheduler_config_json(const std::string& prediction_type, double beta_start, double beta_end);

// The same for an SDXL checkpoint (create_scheduler_from_ldm's "SDXL" branch): SCHEDULER_DEFAULT_CONFIG with the
// prediction type, as an EulerDiscreteScheduler.
std::string sdxl_single_file_scheduler_config_json(const std::string& prediction_type);

// The same for an SD 1.x checkpoint without a .yaml: epsilon, 0.00085..0.012.
const std::string& sd1_single_file_scheduler_config_json();

}  // namespace sdcpu
