// diffusers pipeline folders (what StableDiffusionPipeline.save_pretrained writes):
//   model_index.json
//   unet/config.json + diffusion_pytorch_model[.<variant>].safetensors (or a sharded *.safetensors.index.json)
//   vae/config.json + diffusion_pytorch_model[.<variant>].safetensors
//   text_encoder/config.json + model[.<variant>].safetensors
//   scheduler/scheduler_config.json, tokenizer/vocab.json + merges.txt
//   SDXL (StableDiffusionXLPipeline) also: text_encoder_2/ (CLIPTextModelWithProjection), tokenizer_2/
#pragma once
#include <string>

#include "formats/model_files.h"

namespace sdcpu {

// Opens the pipeline folder `path` (an existing directory). Weight files are chosen as diffusers does:
// with no variant, `<name>.safetensors` (or its sharded index), else the `fp16` variant; with a variant,
// `<name>.<variant>.safetensors` (or its index), else the plain file. `.bin` pickle weights are refused.
ModelFiles open_diffusers_folder(const std::string& path, const std::string& variant = "");

}  // namespace sdcpu
