// TAESD, madebyollin's Tiny AutoEncoder for Stable Diffusion (diffusers.AutoencoderTiny; Bohan, "TAESD", 2023):
// a small distilled decoder and encoder for the same latent space as a model's AutoencoderKL, made of plain 3x3
// convolutions and ReLUs, no norms and no attention. It decodes a 512x512 image with ~70 GMAC against the full
// VAE decoder's ~1250. Written like diffusers' DecoderTiny and EncoderTiny (models/autoencoders/vae.py): a
// flat nn.Sequential `layers`, so the checkpoint's names are "decoder.layers.<i>.*" and "encoder.layers.<i>.*"
// with i the module's place in that list. Built entirely from TaesdConfig.
#pragma once
#include <vector>

#include "core/tensor.h"
#include "formats/model_config.h"
#include "formats/weight_store.h"
#include "nets/layers.h"

namespace sdcpu {

// diffusers.models.unets.unet_2d_blocks.AutoencoderTinyBlock with act_fn "relu":
//   fuse(conv(x) + skip(x)), conv = Sequential(conv3x3, ReLU, conv3x3, ReLU, conv3x3), skip = 1x1 conv without
//   bias when the width changes, else identity; fuse = ReLU.
// Every ReLU is fused into the convolution before it (PreparedConv2d::with_relu), the sum into the last one.
struct TaesdBlock {
  Conv2d conv0, conv2, conv4;  // conv.0, conv.2, conv.4 (conv.1 and conv.3 are the ReLUs)
  Conv2d skip;                 // empty(): identity
  static TaesdBlock load(const WeightStore& w, const std::string& prefix, int64_t in_channels, int64_t out_channels);
  // x [N, H, W, in] (channels-last, nets/layers.h) -> [N, H, W, out]. Taken by value: an identity skip adds x
  // itself into the output when the caller moves it in.
  Tensor operator()(Tensor x) const;
};

class TaesdDecoder {
 public:
  TaesdDecoder(const TaesdConfig& config, const WeightStore& weights);
  // latent [B, latent_channels, h, w], already divided by scaling_factor (the pipeline does that)
  // -> image [B, out_channels, h * f^(levels-1), w * f^(levels-1)] (f = upsampling_scaling_factor) in about
  // [-1, 1], not clamped.
  Tensor forward(const Tensor& latent) const;
  const TaesdConfig& config() const { return config_; }
  // How many times larger the image is than the latent on each side: f^(levels-1).
  int64_t upscale() const;

 private:
  // One level of DecoderTiny.layers: its blocks, nn.Upsample(scale_factor=f) unless it is the last level, then a
  // 3x3 convolution (to out_channels, with bias, in the last level; C -> C without bias elsewhere).
  struct Level {
    std::vector<TaesdBlock> blocks;
    bool upsample = false;
    Conv2d conv;
  };
  TaesdConfig config_;
  Conv2d conv_in_;  // layers.0, followed by layers.1 = ReLU (fused)
  std::vector<Level> levels_;
};

class TaesdEncoder {
 public:
  TaesdEncoder(const TaesdConfig& config, const WeightStore& weights);
  // image [B, in_channels, H, W] in [-1, 1] -> latents [B, latent_channels, ceil(H / 2^(levels-1)), ...]: what
  // AutoencoderTiny.encode(image).latents gives, the UNet's latent space without any scaling factor.
  Tensor forward(const Tensor& image) const;
  const TaesdConfig& config() const { return config_; }

 private:
  // One level of EncoderTiny.layers: a 3x3 convolution (level 0: in_channels -> C with bias; later levels: C -> C,
  // stride 2, without bias), then its blocks.
  struct Level {
    Conv2d conv;
    std::vector<TaesdBlock> blocks;
  };
  TaesdConfig config_;
  std::vector<Level> levels_;
  Conv2d conv_out_;  // the last layer: C -> latent_channels, with bias
};

}  // namespace sdcpu
