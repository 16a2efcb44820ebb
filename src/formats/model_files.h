// Opening a Stable Diffusion model from disk, whichever layout it comes in: a diffusers pipeline folder
// (formats/diffusers_folder.h) or one original-layout .safetensors file (formats/single_file.h). Both
// give the same thing: the component configurations and one WeightStore per network, holding exactly
// the tensor names and shapes a diffusers folder of that model would hold.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "formats/model_config.h"
#include "formats/weight_store.h"

namespace sdcpu {

struct ModelFiles {
  std::string path;
  std::string layout;          // "diffusers folder" | "single file"
  std::string architecture;    // detected: "SD 1.x", "SD 1.x inpainting", "SD 2.x", "SDXL"
  std::string pipeline_class;  // a folder's model_index.json "_class_name"; "" for a single file
  ClipTextConfig text_encoder_config;
  // SDXL's second text encoder (CLIPTextModelWithProjection) and its tokenizer; text_encoder_2 null otherwise.
  ClipTextConfig text_encoder_2_config;
  std::shared_ptr<WeightStore> text_encoder_2;
  std::string tokenizer_2_dir;
  // StableDiffusionXLPipeline's force_zeros_for_empty_prompt (model_index.json; true when absent): with no negative
  // prompt, the unconditional embeddings are zeros instead of the encoded empty prompt.
  bool force_zeros_for_empty_prompt = false;
  UNetConfig unet_config;
  VaeConfig vae_config;
  // The scheduler config as stored: scheduler/scheduler_config.json (its path in scheduler_config_path), or for a
  // single file, which has none, the config diffusers' from_single_file builds (scheduler_config_path empty).
  std::string scheduler_config_json;
  std::string scheduler_config_path;
  std::string tokenizer_dir;  // folder with vocab.json + merges.txt; "" = sdcpu's bundled vocabulary
  // The bundled vocabulary's pad token where it is not CLIPTokenizer's "<|endoftext|>": "!" for SD 2.x, whose
  // tokenizer (stabilityai/stable-diffusion-2) pads with it. "" = the default.
  std::string tokenizer_pad_token;
  // Single file: the prediction type its scheduler config got ("epsilon" | "v_prediction") and why (the .yaml
  // beside it, the --prediction-type option, or diffusers' rule for files without one); "" for a folder, whose
  // scheduler_config.json says it.
  std::string prediction_type, prediction_type_reason;
  std::shared_ptr<WeightStore> text_encoder, unet, vae;  // under diffusers/transformers names
  // Single file: tensors that belong to no component (model_ema.*, alphas_cumprod, position_ids, ...).
  std::vector<std::string> ignored_tensors;
  // The .safetensors files the weights come from, for `sdcpu info`.
  std::vector<std::string> weight_files;
};

// Opens a diffusers folder or a single .safetensors checkpoint. `variant` selects the diffusers weight
// variant ("fp16": diffusion_pytorch_model.fp16.safetensors); it does not apply to single files.
// `prediction_type` ("epsilon" | "v_prediction", "" = as the file says) sets a single file's prediction type
// (formats/single_file.h); InvalidArgument for another value or with a folder.
// Throws ModelError naming the problem: no such path, a pickle checkpoint (.ckpt/.pt/.bin, which sdcpu
// never unpickles), a folder that is not a Stable Diffusion pipeline, a missing component or weight
// file, a file without Stable Diffusion tensors. IoError when an existing file cannot be read.
ModelFiles open_model(const std::string& path, const std::string& variant = "",
                      const std::string& prediction_type = "");

}  // namespace sdcpu
