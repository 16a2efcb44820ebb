// Text-to-image: diffusers' StableDiffusionPipeline.__call__, step for step.
//
//   embeddings = text_encoder(tokenize([negative_prompt, prompt]))
//   latents    = randn([1, C, H/8, W/8], generator(seed)) * init_noise_sigma
//   for t in timesteps:
//     eps     = unet(scale_model_input(cat[latents, latents], t), t, embeddings)
//     eps     = eps_uncond + cfg_scale * (eps_cond - eps_uncond)
//     latents = scheduler.step(eps, t, latents, generator)
//   image = vae.decode(latents / scaling_factor)
//
// With cfg_scale <= 1 diffusers skips the unconditional half (do_classifier_free_guidance is false),
// and so do we: the UNet runs on batch 1.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "core/torch_rng.h"
#include "formats/model_files.h"
#include "nets/clip_text.h"
#include "nets/unet.h"
#include "nets/vae.h"
#include "schedulers/scheduler.h"
#include "text/clip_tokenizer.h"

namespace sdcpu {

struct Txt2ImgRequest {
  std::string prompt;
  std::string negative_prompt;
  int steps = 20;
  float cfg_scale = 7.5f;
  std::string sampler = "dpmpp_2m";
  uint64_t seed = 0;
  int width = 512;
  int height = 512;
  int clip_skip = 0;
};

// Throws InvalidArgument naming the first invalid field; called before any work is done.
void validate(const Txt2ImgRequest& request);

class Txt2ImgPipeline {
 public:
  explicit Txt2ImgPipeline(ModelFiles files);

  // Called after every scheduler step with the step index and the new latents.
  using StepCallback = std::function<void(int step, int steps, const Tensor& latents)>;

  struct Result {
    Tensor latents;  // final latents [1, C, H/8, W/8]
    Tensor image;    // VAE output [1, 3, H, W] in about [-1, 1], not clamped
  };
  Result run(const Txt2ImgRequest& request, const StepCallback& on_step = {}) const;

  // One iteration of the denoising loop at scheduler step i: UNet on the guidance batch (when
  // embeddings hold [uncond, cond]), guidance mix, scheduler step. Returns the new latents.
  Tensor denoise_step(Scheduler& scheduler, int i, const Tensor& latents, const Tensor& embeddings, float cfg_scale,
                      TorchGenerator& generator) const;

  // VAE decode of final latents (divided by the scaling factor first): [1, 3, H, W] in about [-1, 1].
  Tensor decode_latents(const Tensor& latents) const;

  // Prompt embeddings [batch, 77, hidden] for the given prompts.
  Tensor encode_prompts(const std::vector<std::string>& prompts, int clip_skip) const;

  const ModelFiles& files() const { return files_; }

 private:
  ModelFiles files_;
  ClipTokenizer tokenizer_;
  ClipTextModel text_encoder_;
  UNet2DConditionModel unet_;
  VaeDecoder vae_decoder_;
  SchedulerConfig scheduler_config_;
};

}  // namespace sdcpu
