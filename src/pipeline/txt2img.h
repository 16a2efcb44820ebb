// Text-to-image: diffusers' StableDiffusionPipeline.__call__, step for step.
//
//   embeddings = text_encoder(tokenize([negative_prompt, prompt]))    -> [uncond x B, cond x B]
//   latents    = randn([B, C, H/8, W/8], generator(seed)) * init_noise_sigma
//   for t in timesteps:
//     eps     = unet(scale_model_input(cat[latents, latents], t), t, embeddings)
//     eps     = eps_uncond + cfg_scale * (eps_cond - eps_uncond)
//     latents = scheduler.step(eps, t, latents, generator)
//   image = vae.decode(latents / scaling_factor)
//
// With cfg_scale <= 1 diffusers skips the unconditional half (do_classifier_free_guidance is false),
// and so do we: the UNet runs on batch 1.
//
// An LCM-distilled UNet (unet config time_cond_proj_dim) is never run with classifier-free guidance: the guidance
// scale enters the UNet instead, as the embedding guidance_scale_embedding(cfg_scale) (pipeline/guidance_embedding.h)
// passed as its timestep_cond, one UNet pass on the prompt per step, the negative prompt unused. That is
// StableDiffusionPipeline's loop with such a UNet, and, with the lcm sampler, LatentConsistencyModelPipeline's step
// for step: same initial latents (init_noise_sigma 1), LCMScheduler.scale_model_input is the identity, and the
// last LCMScheduler.step returns its denoised sample, which that pipeline decodes.
//
// B = batch_size is diffusers' num_images_per_prompt: one generator for the whole batch, each prompt
// embedding repeated B times, one UNet call on the guidance batch 2B per step, one scheduler step and one
// VAE decode over the whole batch. (GenerateOptions::batch_count, images one after another with seeds
// seed + k, is a different thing and lives in the public API.)
#pragma once
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/activation_arena.h"
#include "core/tensor.h"
#include "core/torch_rng.h"
#include "formats/model_files.h"
#include "formats/taesd_files.h"
#include "nets/clip_text.h"
#include "nets/taesd.h"
#include "nets/token_merging.h"
#include "nets/unet.h"
#include "nets/vae.h"
#include "pipeline/prompt_conditioning.h"
#include "pipeline/step_cache_schedule.h"
#include "pipeline/weight_cache.h"
#include "schedulers/scheduler.h"
#include "text/clip_tokenizer.h"

namespace sdcpu {

struct Txt2ImgRequest {
  std::string prompt;
  std::string negative_prompt;
  int steps = 20;
  float cfg_scale = 7.5f;
  std::string sampler = "dpmpp_2m";
  // Overrides the model's timestep_spacing (leading | linspace | trailing); empty: as its scheduler config says
  // (schedulers/scheduler_config.h).
  std::string timestep_spacing;
  uint64_t seed = 0;
  int width = 512;
  int height = 512;
  int clip_skip = 0;
  // Images per UNet call (num_images_per_prompt); the guidance batch is 2 * batch_size.
  int batch_size = 1;
  // Step caching (DeepCache; nets/unet.h UNetStepCache): 1 of every `cache_interval` UNet calls runs in full and
  // keeps the deep features at branch `cache_branch`, and the calls between run only the shallow layers above it.
  // Which calls run in full: pipeline/step_cache_schedule.h (`cache_schedule` uniform: 0, N, 2N, ...; quadratic:
  // around `cache_center`, -1 = the middle, with `cache_power`). Interval 1 = every call in full (off).
  int cache_interval = 1;
  int cache_branch = 0;
  std::string cache_schedule = "uniform";
  int cache_center = -1;
  double cache_power = 1.4;
  // Token merging (ToMe; nets/token_merging.h, tomesd's defaults): each self-attention of the UNet blocks downsampled
  // at most `tome_max_downsample` times runs on int(N * tome_ratio) fewer tokens. 0 = off. The destinations are
  // drawn from a generator seeded with `seed`, apart from the noise's (tomesd forks torch's default generator: the
  // same when torch.manual_seed(seed) ran just before the pipeline call).
  double tome_ratio = 0.0;
  int tome_max_downsample = 1;
  // diffusers' `latents` argument: when not empty, the initial noise [batch_size, C, H/8, W/8] used instead
  // of randn from the seed (the generator is still seeded, for ancestral samplers' noise). It is scaled by
  // the scheduler's init_noise_sigma as diffusers does.
  Tensor latents;
};

// Wall-clock seconds of each stage of one run(), measured inside the pipeline.
struct StageTimes {
  double text_encode_s = 0;
  std::vector<double> denoise_step_s;  // per step: UNet on the guidance batch, guidance mix, scheduler step
  double vae_decode_s = 0;
  double total_s = 0;  // the whole run(), validation to decoded image
};

// Throws InvalidArgument naming the first invalid field; called before any work is done.
void validate(const Txt2ImgRequest& request);

// The request's step-caching schedule (pipeline/step_cache_schedule.h full_unet_passes says which calls run in
// full).
StepCacheSchedule step_cache_schedule(const Txt2ImgRequest& request);

// Whether two requests can share one denoising loop in run_batch(): the same size, steps, sampler, timestep
// spacing, guidance, clip skip and step caching. Prompts, seeds, given latents and batch sizes may differ.
bool batchable(const Txt2ImgRequest& a, const Txt2ImgRequest& b);

// Where the weights live and what memory the pipeline hands back between its stages (README, "Weight cache and
// memory").
struct MemoryOptions {
  // With a directory, each network's packed weights come from a cache file there (pipeline/weight_cache.h),
  // written on the first start (streamed: no second copy of the weights in memory); they live in the page
  // cache, and this process maps them when a network first runs (kernels/packed_weight_cache.h). Without
  // low_memory they then stay mapped; with it see below. The defaults here are the explicit "none": the
  // public API's LoadOptions resolves the user-facing defaults (include/sdcpu/sdcpu.h).
  std::string weight_cache_dir;
  // One stage's weights and activations in memory at a time, so that the peak is the largest stage's and not
  // the sum of them. With a weight cache each network's weights are copied in while it runs and their memory
  // is then reused by the next stage (PackedWeightCache::set_copy_in): measured at 512x512 bf16, 20 steps, a
  // peak RSS of 2.0 GB instead of 3.0 GB. Without one, each stage's freed memory goes back to the system
  // (core/memory.h release_free_memory), which lowers the peak less, since all the weights stay.
  bool low_memory = false;
};

// A TAESD (nets/taesd.h) beside the model's VAE or instead of it (README, "TAESD").
struct TaesdOptions {
  std::optional<TaesdFiles> files;  // none: no TAESD
  // true: the TAESD decodes every image, and the model's VAE decoder is not built (`--vae`); false: it only
  // decodes previews of the latents while they are denoised (`--preview-vae`).
  bool replaces_vae = false;
};

class Txt2ImgPipeline {
 public:
  // Builds every network, computing in `compute` (core/compute_type.h): fp32 matches diffusers within 1e-4; bf16
  // packs the text encoder, UNet and VAE weights as bfloat16 (half the memory) and runs their products in bf16.
  // A TAESD whose latent space is not the model's (other latent channels, or another upscale) is a ModelError.
  explicit Txt2ImgPipeline(ModelFiles files, ComputeType compute = ComputeType::f32, MemoryOptions memory = {},
                           TaesdOptions taesd = {});

  // Called after every scheduler step with the step index and the new latents.
  using StepCallback = std::function<void(int step, int steps, const Tensor& latents)>;

  struct Result {
    Tensor latents;  // final latents [B, C, H/8, W/8]
    Tensor image;    // VAE output [B, 3, H, W] in about [-1, 1], not clamped
    StageTimes times;
  };
  Result run(const Txt2ImgRequest& request, const StepCallback& on_step = {}) const;

  // Called after every step for each request still in the batch, with its index in run_batch()'s requests and
  // its new latents; returning false takes the request out of the batch (its Result stays empty).
  using BatchStepCallback = std::function<bool(int request, int step, int steps, const Tensor& latents)>;

  // Several batchable() requests in one denoising loop (cross-request batching: the service's --max-batch):
  // every step is one UNet call on all their images, [uncond of each, cond of each]. Each request keeps its own
  // prompt embeddings, generator and scheduler and is decoded on its own, so its result is the one run() gives
  // it alone, up to the kernels' rounding at another batch size. At most 64 images in all.
  std::vector<Result> run_batch(const std::vector<Txt2ImgRequest>& requests,
                                const BatchStepCallback& on_step = {}) const;

  // One iteration of the denoising loop at scheduler step i: UNet on the guidance batch (when
  // embeddings hold [uncond x B, cond x B] for B latents), guidance mix, scheduler step. Returns the new
  // latents. Embeddings alone: a UNet that needs added conditions (SDXL) refuses them with InvalidArgument.
  Tensor denoise_step(Scheduler& scheduler, int i, const Tensor& latents, const Tensor& embeddings, float cfg_scale,
                      TorchGenerator& generator) const;

  // diffusers' do_classifier_free_guidance: cfg_scale > 1, and the UNet is not LCM-distilled.
  bool classifier_free_guidance(float cfg_scale) const;
  // An LCM-distilled UNet's timestep_cond for `images` latents: guidance_scale_embedding(cfg_scale) [images,
  // time_cond_proj_dim]. Empty for other UNets.
  Tensor timestep_cond(float cfg_scale, int64_t images) const;

  // VAE decode of final latents (divided by the scaling factor first): [B, 3, H, W] in about [-1, 1]. By the
  // TAESD when it replaces the VAE (TaesdOptions::replaces_vae).
  Tensor decode_latents(const Tensor& latents) const;
  // The TAESD's decode of latents at any step, for a preview: [B, 3, H, W] in about [-1, 1]. InvalidArgument when
  // the pipeline has no TAESD.
  Tensor preview_latents(const Tensor& latents) const;
  // The TAESD, when one was given (null otherwise), and whether it decodes the images.
  const TaesdFiles* taesd() const { return taesd_files_ ? &*taesd_files_ : nullptr; }
  bool taesd_decodes() const { return !vae_decoder_.has_value(); }

  // Prompt embeddings (encoder_hidden_states) [batch, 77, cross_attention_dim] for the given prompts.
  Tensor encode_prompts(const std::vector<std::string>& prompts, int clip_skip) const;
  // Everything the UNet is conditioned on for one request, as its family says (pipeline/prompt_conditioning.h):
  // [uncond, cond] with guidance (cfg_scale > 1), else [cond]; not yet repeated for batch_size.
  PromptConditioning encode_conditioning(const Txt2ImgRequest& request) const;
  const PromptConditioningFamily& conditioning_family() const { return family_; }

  const ModelFiles& files() const { return files_; }
  // The scheduler config the model stores (a folder's file, or diffusers' single-file default).
  const StoredSchedulerConfig& scheduler_config() const { return scheduler_config_; }
  // The settings `request.sampler` runs with for `request` (its timestep_spacing override included).
  ResolvedSchedulerConfig scheduler_settings(const Txt2ImgRequest& request) const;
  // One per network when a weight cache directory was given, else empty.
  const std::vector<WeightCacheStatus>& weight_cache_status() const { return weight_cache_status_; }
  ComputeType compute_type() const { return compute_; }
  // In int8: which UNet layers compute in int8 and which its policy keeps in bf16 (empty otherwise).
  const WeightStore::Int8Report& int8_report() const { return files_.unet->int8_report(); }
  // How the activations were placed: the arena's size in memory, its plans, and where each buffer came from.
  ActivationArena::Stats activation_stats() const { return arena_->stats(); }

 private:
  struct Denoising;
  // The UNet's conditioning for a batch: [uncond of every member, cond of every member].
  static PromptConditioning batch_embeddings(const std::vector<Denoising*>& batch);
  // The rows of `rows` (one per image of the UNet batch of `batch`) that belong to `kept`, which is `batch` less the
  // members that left; for the step cache's deep features.
  static Tensor batch_rows(const Tensor& rows, const std::vector<Denoising*>& batch,
                           const std::vector<Denoising*>& kept);
  // One step of the loop for every member of a batch: one UNet call on `embeddings` (batch_embeddings(batch)),
  // then each member's guidance mix and scheduler step.
  // With a step cache, the UNet runs in full (keeping its deep features in it) when `full_pass`, else shallow.
  void denoise_step(const std::vector<Denoising*>& batch, const PromptConditioning& embeddings, int i,
                    UNetStepCache* step_cache = nullptr, bool full_pass = true,
                    const TokenMergeOptions& tome_options = {}) const;
  TextEncoders text_encoders() const;

  // With low_memory: frees the scratch buffers, and without copied-in weights hands what the stage freed back to
  // the system (MemoryOptions).
  void end_stage() const;

  ModelFiles files_;
  ComputeType compute_;
  MemoryOptions memory_;
  // Every network's activations (core/activation_arena.h): one plan per network and input shape, all in one
  // address range, since the networks run one after another. Declared before the weight caches, which may copy
  // weights into its front.
  std::unique_ptr<ActivationArena> arena_;
  // Declared before the networks, which are built into them (null: the network holds its own packed weights).
  std::shared_ptr<PackedWeightCache> text_encoder_weights_, unet_weights_, vae_weights_, text_encoder_2_weights_;
  std::vector<WeightCacheStatus> weight_cache_status_;
  PromptConditioningFamily family_;
  ClipTokenizer tokenizer_;
  ClipTextModel text_encoder_;
  std::optional<ClipTokenizer> tokenizer_2_;     // SDXL
  std::optional<ClipTextModel> text_encoder_2_;  // SDXL
  UNet2DConditionModel unet_;
  std::optional<VaeDecoder> vae_decoder_;  // absent when the TAESD decodes the images
  StoredSchedulerConfig scheduler_config_;
  std::optional<TaesdFiles> taesd_files_;
  std::optional<TaesdDecoder> taesd_decoder_;

  Tensor taesd_decode(const Tensor& latents) const;
};

}  // namespace sdcpu
