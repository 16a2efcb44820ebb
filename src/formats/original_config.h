// The original (LDM / AUTOMATIC1111) config of a single-file checkpoint: the .yaml with the checkpoint's stem
// beside it (v2-1_768-ema-pruned.safetensors + v2-1_768-ema-pruned.yaml), as A1111 finds it, or diffusers'
// from_single_file(original_config_file=...) takes it.
//
// Only the few keys diffusers 0.27.2's single-file loader reads that a checkpoint's tensor shapes cannot tell
// are read (loaders/single_file_utils.py: create_scheduler_from_ldm, set_image_size,
// create_unet_diffusers_config, create_vae_diffusers_config). The reader is a small line parser for the block
// mappings these files are written in ("key: value" nested by indentation), not a YAML library: it ignores
// comments, list items and flow values ([1, 2]) it does not need, and reads no file over 1 MB.
#pragma once
#include <optional>
#include <string>

namespace sdcpu {

struct OriginalConfig {
  std::string path;
  // model.params.parameterization: "eps" or "v" (ModelError for anything else: sdcpu cannot run "x0").
  std::optional<std::string> parameterization;
  std::optional<double> linear_start, linear_end;  // model.params.*: the scaled_linear betas' ends
  std::optional<double> scale_factor;              // model.params.scale_factor: the VAE's scaling factor
  std::optional<int> num_heads;                    // model.params.unet_config (SDXL: network_config).params.num_heads
  std::optional<int> num_head_channels;            // model.params.unet_config.params.num_head_channels
};

// The .yaml (or .yml) beside `checkpoint_path` with the same stem, or "" when there is none.
std::string original_config_beside(const std::string& checkpoint_path);

// Reads `path`. Throws ModelError (naming the file and line) for a value that is not what the key needs, an
// unknown parameterization, or a file that cannot be read or is over 1 MB.
OriginalConfig read_original_config(const std::string& path);

}  // namespace sdcpu
