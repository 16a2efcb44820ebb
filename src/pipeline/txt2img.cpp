#include "pipeline/txt2img.h"

#include <cmath>

#include "core/error.h"
#include "core/torch_rng.h"
#include "kernels/tensor_ops.h"

namespace sdcpu {
namespace {

// Beyond these the request is a mistake, or would need more memory than any CPU box has for fp32
// activations (a 2048x2048 image already needs ~10 GB in the VAE decoder).
constexpr int kMaxSide = 2048;
constexpr int kMaxSteps = 1000;
constexpr float kMaxCfg = 100.0f;

ClipTokenizer make_tokenizer(const ModelFiles& files) {
  return files.tokenizer_dir.empty() ? ClipTokenizer::bundled() : ClipTokenizer::from_directory(files.tokenizer_dir);
}

}  // namespace

void validate(const Txt2ImgRequest& r) {
  auto side = [](int v, const char* name) {
    if (v < 64 || v > kMaxSide || v % 8 != 0)
      throw InvalidArgument(std::string(name) + " must be a multiple of 8 between 64 and " + std::to_string(kMaxSide) +
                            ", got " + std::to_string(v));
  };
  side(r.width, "width");
  side(r.height, "height");
  if (r.steps < 1 || r.steps > kMaxSteps)
    throw InvalidArgument("steps must be between 1 and " + std::to_string(kMaxSteps) + ", got " +
                          std::to_string(r.steps));
  if (!std::isfinite(r.cfg_scale) || r.cfg_scale < 0 || r.cfg_scale > kMaxCfg)
    throw InvalidArgument("cfg scale must be between 0 and " + std::to_string(static_cast<int>(kMaxCfg)));
  if (r.clip_skip < 0 || r.clip_skip > 10) throw InvalidArgument("clip skip must be between 0 and 10");
}

Txt2ImgPipeline::Txt2ImgPipeline(ModelFiles files)
    : files_(std::move(files)),
      tokenizer_(make_tokenizer(files_)),
      text_encoder_(files_.text_encoder_config, *files_.text_encoder),
      unet_(files_.unet_config, *files_.unet),
      vae_decoder_(files_.vae_config, *files_.vae),
      scheduler_config_(parse_scheduler_config(files_.scheduler_config_json)) {}

Tensor Txt2ImgPipeline::encode_prompts(const std::vector<std::string>& prompts, int clip_skip) const {
  std::vector<std::vector<int>> ids;
  for (const std::string& p : prompts)
    ids.push_back(tokenizer_.encode(p, files_.text_encoder_config.max_position_embeddings));
  return text_encoder_.forward(ids, clip_skip);
}

Tensor Txt2ImgPipeline::denoise_step(Scheduler& scheduler, int i, const Tensor& latents, const Tensor& embeddings,
                                     float cfg_scale, TorchGenerator& generator) const {
  const bool guided = embeddings.dim(0) == 2 * latents.dim(0);
  const Tensor unet_input = guided ? concat0({latents, latents}) : latents;
  const Tensor scaled = scheduler.scale_model_input(unet_input, i);
  const Tensor noise_pred = unet_.forward(scaled, static_cast<float>(scheduler.timesteps()[i]), embeddings);
  if (!guided) return scheduler.step(noise_pred, i, latents, generator);
  // noise_pred_uncond + guidance_scale * (noise_pred_text - noise_pred_uncond), in this order.
  const Tensor uncond = noise_pred.slice0(0, 1), cond = noise_pred.slice0(1, 2);
  Tensor guided_pred(uncond.shape());
  for (int64_t j = 0; j < guided_pred.numel(); ++j) guided_pred[j] = uncond[j] + cfg_scale * (cond[j] - uncond[j]);
  return scheduler.step(guided_pred, i, latents, generator);
}

Tensor Txt2ImgPipeline::decode_latents(const Tensor& latents) const {
  // latents / scaling_factor, divided (not multiplied by the reciprocal) to round as diffusers does.
  Tensor scaled(latents.shape());
  for (int64_t j = 0; j < latents.numel(); ++j) scaled[j] = latents[j] / files_.vae_config.scaling_factor;
  return vae_decoder_.forward(scaled);
}

Txt2ImgPipeline::Result Txt2ImgPipeline::run(const Txt2ImgRequest& request, const StepCallback& on_step) const {
  validate(request);
  if (request.clip_skip >= files_.text_encoder_config.num_hidden_layers)
    throw InvalidArgument("clip skip exceeds the text encoder's layers");
  std::unique_ptr<Scheduler> scheduler = make_scheduler(request.sampler, scheduler_config_);
  scheduler->set_timesteps(request.steps);

  const bool guided = request.cfg_scale > 1.0f;
  const Tensor embeddings = guided ? encode_prompts({request.negative_prompt, request.prompt}, request.clip_skip)
                                   : encode_prompts({request.prompt}, request.clip_skip);

  const int64_t channels = files_.unet_config.in_channels;
  // The VAE downsamples by 2 per level except the last: 8x for the 4-level SD VAE.
  const int64_t factor = int64_t{1} << (files_.vae_config.block_out_channels.size() - 1);
  if (request.width % factor != 0 || request.height % factor != 0)
    throw InvalidArgument("width and height must be multiples of " + std::to_string(factor) + " for this model");
  TorchGenerator generator(request.seed);
  Tensor latents = generator.randn({1, channels, request.height / factor, request.width / factor});
  scale_(latents, static_cast<float>(scheduler->init_noise_sigma()));

  const auto& timesteps = scheduler->timesteps();
  const int steps = static_cast<int>(timesteps.size());
  for (int i = 0; i < steps; ++i) {
    latents = denoise_step(*scheduler, i, latents, embeddings, request.cfg_scale, generator);
    if (on_step) on_step(i, steps, latents);
  }

  return Result{latents, decode_latents(latents)};
}

}  // namespace sdcpu
