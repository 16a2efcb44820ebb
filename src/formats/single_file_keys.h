// Key mapping for single-file ("original", CompVis/LDM layout) Stable Diffusion checkpoints: which tensor
// of the file is which diffusers/transformers weight, and the component configurations derived from the
// tensor shapes (a single file carries no config.json).
//
// This is a pure function over (name, shape) lists so that it can be checked against the full SD 1.5
// name/shape manifest without any weights. It mirrors diffusers' own conversion,
// diffusers/pipelines/stable_diffusion/convert_from_ckpt.py (convert_ldm_unet_checkpoint,
// convert_ldm_vae_checkpoint, convert_ldm_clip_checkpoint, create_unet_diffusers_config,
// create_vae_diffusers_config), but renames only: no tensor is copied or reshaped; only SD 2.x's fused OpenCLIP
// q/k/v is split, into row blocks of the file's tensor (MappedTensor::first_row).
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "formats/model_config.h"

namespace sdcpu {

// A tensor of the file: its name and shape.
struct NamedShape {
  std::string name;
  Shape shape;
};

// One weight of a component: `name` is the diffusers/transformers name, `source` the name in the file.
// The shape is the file's: the original VAE mid-block attention stores its q/k/v/proj_out as
// [C, C, 1, 1] convolutions where diffusers has [C, C] linears (WeightStore::get ignores trailing 1s).
// With first_row >= 0 the weight is rows [first_row, first_row + shape[0]) of `source` (OpenCLIP's fused
// q/k/v, split as diffusers' convert_open_clip_checkpoint slices it), and `shape` is that block's.
// With transposed: the weight is `source` transposed (OpenCLIP's text_projection), and `shape` is the weight's.
struct MappedTensor {
  std::string name;
  std::string source;
  Shape shape;
  int64_t first_row = -1;
  bool transposed = false;
};

// The model families a single file can hold, told apart by the text encoder's key family (as diffusers'
// single_file_utils.infer_diffusers_model_type does).
enum class SingleFileFamily {
  kSD1,   // cond_stage_model.transformer.*: OpenAI CLIP ViT-L/14 in transformers' layout
  kSD2,   // cond_stage_model.model.*: OpenCLIP ViT-H/14 (fused in_proj q/k/v), formats/single_file_openclip.h
  kSDXL,  // conditioner.embedders.0.transformer.* (CLIP ViT-L) and .1.model.* (OpenCLIP ViT-bigG with projection)
};

struct SingleFileLayout {
  SingleFileFamily family = SingleFileFamily::kSD1;
  std::string architecture;                           // "SD 1.x", "SD 1.x inpainting", "SD 2.x", "SDXL"
  std::vector<MappedTensor> text_encoder, unet, vae;  // each sorted by diffusers name
  std::vector<MappedTensor> text_encoder_2;           // SDXL's CLIPTextModelWithProjection; empty otherwise
  std::vector<std::string> ignored;                   // file tensors belonging to no component, in file order
  ClipTextConfig text_encoder_config, text_encoder_2_config;
  UNetConfig unet_config;
  VaeConfig vae_config;
  // The derived configurations as diffusers/transformers config.json text (for `sdcpu info`).
  std::string text_encoder_config_json, text_encoder_2_config_json, unet_config_json, vae_config_json;
};

// What the original config (formats/original_config.h) -- the .yaml beside the file, or the one diffusers would
// infer -- says that the tensor shapes cannot: the defaults are those of v1-inference.yaml (SD 1.x) and
// v2-inference*.yaml (SD 2.x).
struct SingleFileHints {
  std::optional<int> num_heads;          // unet_config.params.num_heads (v1: 8)
  std::optional<int> num_head_channels;  // unet_config.params.num_head_channels (v2: 64)
  std::optional<double> scale_factor;    // the VAE scaling factor (0.18215)
  int image_size = 512;                  // set_image_size: 768 for v-prediction configs, 1024 for SDXL
};

// Maps every tensor of a single-file checkpoint. Tensors outside the three components (model_ema.*,
// alphas_cumprod, betas, posterior_*, position_ids, first_stage_model.loss.*, ...) go to `ignored`;
// they are never an error. Throws ModelError when the file is not an SD checkpoint (no UNet, VAE or
// text encoder keys), is a family sdcpu cannot load (an SDXL refiner), lacks SDXL's second text encoder, has two
// tensors for the same weight, lacks a tensor the configuration derivation needs, or has an OpenCLIP text encoder
// that cannot be split (formats/single_file_openclip.h).
SingleFileLayout map_single_file(const std::vector<NamedShape>& tensors, const SingleFileHints& hints = {});

}  // namespace sdcpu
