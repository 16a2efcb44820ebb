// Opening a TAESD (madebyollin's Tiny AutoEncoder; diffusers.AutoencoderTiny, nets/taesd.h) as people have it:
//   - a diffusers folder: config.json + diffusion_pytorch_model.safetensors (the Hub's madebyollin/taesd and
//     madebyollin/taesdxl, or what AutoencoderTiny.save_pretrained writes);
//   - one .safetensors file of the decoder in madebyollin's original layout, "taesd_decoder.safetensors"
//     (tensors "1.weight", "3.conv.0.weight", ...: the nn.Sequential of madebyollin/taesd's taesd.py, whose
//     module 0 is the clamp), or of a whole AutoencoderTiny in diffusers' names ("decoder.layers.0.weight", ...).
//     A file carries no config: it gets AutoencoderTiny's defaults (madebyollin/taesd's config, which diffusers'
//     scripts/convert_tiny_autoencoder_to_diffusers.py also assumes) with the latent channels and widths read from
//     its tensors' shapes; the network then checks every other shape.
#pragma once
#include <memory>
#include <string>

#include "formats/model_config.h"
#include "formats/weight_store.h"

namespace sdcpu {

struct TaesdFiles {
  std::string path;
  std::string layout;  // "diffusers folder" | "original decoder file" | "diffusers single file"
  TaesdConfig config;
  std::shared_ptr<WeightStore> weights;  // under diffusers' names: "decoder.layers.<i>.*", "encoder.layers.<i>.*"
  bool has_encoder = false;              // an original decoder file has only the decoder
};

// Throws ModelError naming the problem: no such path, a pickle file, a folder without the files, a config that is
// not an AutoencoderTiny's (e.g. a full AutoencoderKL), TAESD's encoder file given for its decoder, a file
// without TAESD tensors. IoError when an existing file cannot be read.
TaesdFiles open_taesd(const std::string& path);

}  // namespace sdcpu
