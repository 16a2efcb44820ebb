// FLOPs counted analytically from the networks' configurations, for `sdcpu bench`'s efficiencies and FLOP bounds:
// 2 per multiply-add of every convolution, linear layer and attention product. Elementwise work (norms,
// activations, softmax) is not counted. Each counter mirrors its network's structure (nets/*.cpp); shapes follow
// the same rules.
#pragma once
#include <cstdint>

#include "formats/model_config.h"

namespace sdcpu {

// Multiply-add FLOPs of one UNet forward (2 per multiply-add), by kind.
struct UNetFlops {
  double conv3x3 = 0;    // every k x k convolution with k > 1: 2 Cin Cout k k Ho Wo
  double conv1x1 = 0;    // conv_shortcut, and proj_in/proj_out when they are convolutions
  double linear = 0;     // 2 M K N: attention projections, feed-forward, time embedding, linear proj_in/out
  double attention = 0;  // Q K^T and P V: 2 * 2 Lq Lk D per head
  double total() const { return conv3x3 + conv1x1 + linear + attention; }
};
// For a UNet batch of `batch` latents of latent_h x latent_w (batch 2 for one guided image), with
// `text_tokens` of context. Elementwise work (norms, activations, softmax) is not counted.
// With shallow_branch >= 0: a shallow pass of step caching at that branch (nets/unet.h UNetStepCache), which runs
// only the layers above the cut.
UNetFlops count_unet_flops(const UNetConfig& config, int64_t batch, int64_t latent_h, int64_t latent_w,
                           int64_t text_tokens = 77, int shallow_branch = -1);

// Multiply-add FLOPs of one VAE decode (post_quant_conv, the decoder; AutoencoderKL.decode) of `batch` latents
// of latent_h x latent_w: every convolution, the mid-block attention's projections and its two products (the
// same 2-per-multiply-add count as the UNet's). SD 1.5 at 512x512: 2515 GFLOP; at 256x256: 622.
double count_vae_decoder_flops(const VaeConfig& config, int64_t batch, int64_t latent_h, int64_t latent_w);

// The same for one TAESD decode (nets/taesd.h): every convolution of DecoderTiny. madebyollin/taesd at 512x512:
// 141.35 GFLOP (5.6% of the SD 1.5 VAE decoder's).
double count_taesd_decoder_flops(const TaesdConfig& config, int64_t batch, int64_t latent_h, int64_t latent_w);

// One text encoder pass (nets/clip_text.h) over `prompts` prompts of the config's max_position_embeddings tokens:
// per layer q, k, v, out_proj, fc1 and fc2, and the two attention products, plus text_projection when the config is
// CLIPTextModelWithProjection. SD 1.x's CLIP ViT-L, 2 prompts: 26.6 GFLOP; SDXL's OpenCLIP ViT-bigG: 195.7.
double count_clip_text_flops(const ClipTextConfig& config, int64_t prompts);

}  // namespace sdcpu
