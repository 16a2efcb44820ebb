#include "pipeline/txt2img.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <optional>

#include "core/error.h"
#include "core/memory.h"
#include "core/torch_rng.h"
#include "kernels/scratch.h"
#include "kernels/tensor_ops.h"
#include "pipeline/guidance_embedding.h"
#include "pipeline/int8_policy.h"
#include "text/unicode_text.h"

namespace sdcpu {
namespace {

// Beyond these the request is a mistake, or would need more memory than any CPU box has for fp32
// activations (a 2048x2048 image already needs ~10 GB in the VAE decoder).
constexpr int kMaxSide = 2048;
constexpr int kMaxSteps = 1000;
constexpr float kMaxCfg = 100.0f;
// A batch's activations grow linearly with it; 64 images in one UNet call is already far beyond any CPU's
// sweet spot (throughput stops growing after a few).
constexpr int kMaxBatch = 64;

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

ClipTokenizer make_tokenizer(const std::string& dir, const std::string& pad_token) {
  return dir.empty() ? ClipTokenizer::bundled(pad_token) : ClipTokenizer::from_directory(dir);
}

}  // namespace

void validate(const Txt2ImgRequest& r) {
  auto side = [](int v, const char* name) {
    if (v < 64 || v > kMaxSide || v % 8 != 0)
      throw InvalidArgument(std::string(name) + " must be a multiple of 8 between 64 and " + std::to_string(kMaxSide) +
                                ", got " + std::to_string(v),
                            name);
  };
  side(r.width, "width");
  side(r.height, "height");
  if (r.steps < 1 || r.steps > kMaxSteps)
    throw InvalidArgument(
        "steps must be between 1 and " + std::to_string(kMaxSteps) + ", got " + std::to_string(r.steps), "steps");
  if (!std::isfinite(r.cfg_scale) || r.cfg_scale < 0 || r.cfg_scale > kMaxCfg)
    throw InvalidArgument("cfg scale must be between 0 and " + std::to_string(static_cast<int>(kMaxCfg)), "cfg_scale");
  if (r.clip_skip < 0 || r.clip_skip > 10) throw InvalidArgument("clip skip must be between 0 and 10", "clip_skip");
  const auto& samplers = scheduler_names();
  if (std::find(samplers.begin(), samplers.end(), r.sampler) == samplers.end()) {
    std::string list;
    for (const std::string& n : samplers) list += (list.empty() ? "" : ", ") + n;
    throw InvalidArgument("unknown sampler \"" + r.sampler + "\"; valid samplers: " + list, "sampler");
  }
  const auto& spacings = timestep_spacing_names();
  if (!r.timestep_spacing.empty() && std::find(spacings.begin(), spacings.end(), r.timestep_spacing) == spacings.end())
    throw InvalidArgument("timestep spacing must be leading, linspace or trailing, got \"" + r.timestep_spacing + "\"",
                          "timestep_spacing");
  try {
    text::decode_utf8(r.prompt);  // throws "prompt is not valid UTF-8: ... at byte N"
  } catch (const InvalidArgument& e) {
    throw InvalidArgument(e.what(), "prompt");
  }
  try {
    text::decode_utf8(r.negative_prompt);
  } catch (const InvalidArgument& e) {
    throw InvalidArgument(std::string("negative ") + e.what(), "negative_prompt");
  }
  validate(step_cache_schedule(r));
  if (r.cache_branch < 0)  // its upper bound depends on the UNet: run_batch() checks it
    throw InvalidArgument("cache branch must not be negative, got " + std::to_string(r.cache_branch), "cache_branch");
  try {
    TokenMergeOptions{r.tome_ratio, r.tome_max_downsample}.validate();
  } catch (const InvalidArgument& e) {
    throw InvalidArgument(e.what(), "tome_ratio");
  }
  if (r.batch_size < 1 || r.batch_size > kMaxBatch)
    throw InvalidArgument("batch size must be between 1 and " + std::to_string(kMaxBatch) + ", got " +
                          std::to_string(r.batch_size));
}

StepCacheSchedule step_cache_schedule(const Txt2ImgRequest& r) {
  return {r.cache_interval, r.cache_schedule, r.cache_center, r.cache_power};
}

namespace {

// Sets every network's compute type on its weight store before the networks are built (they pack for it). int8
// is the UNet's alone (with its policy's exclusions): the text encoders run once per image and the VAE's decode
// is where quantization noise would show undamped, so they compute in bf16.
ModelFiles with_compute_type(ModelFiles files, ComputeType compute) {
  for (const auto& store : {files.text_encoder, files.vae, files.text_encoder_2})
    if (store) store->set_compute_type(without_int8(compute));
  if (files.unet) {
    files.unet->set_compute_type(compute);
    files.unet->set_int8_exclusions(unet_int8_exclusions());
  }
  return files;
}

// A TAESD must decode the latents this model's UNet makes: as many channels (taesd3/taef1's 16 on an SD 1.x model
// would be noise; taesd and taesdxl share 4 channels, which no file tells apart), and images as many times larger
// as the model's VAE makes them.
void check_taesd_fits(const TaesdFiles& taesd, const ModelFiles& model) {
  const int unet_channels = model.unet_config.out_channels;
  if (taesd.config.latent_channels != unet_channels || taesd.config.latent_channels != model.vae_config.latent_channels)
    throw ModelError(taesd.path + ": a TAESD for the wrong latent space: it decodes " +
                     std::to_string(taesd.config.latent_channels) + "-channel latents, and this model's UNet makes " +
                     std::to_string(unet_channels) + "-channel ones");
  const size_t taesd_levels = taesd.config.decoder_block_out_channels.size();
  int64_t taesd_upscale = 1;
  for (size_t i = 1; i < taesd_levels; ++i) taesd_upscale *= taesd.config.upsampling_scaling_factor;
  const int64_t vae_upscale = int64_t{1} << (model.vae_config.block_out_channels.size() - 1);
  if (taesd_upscale != vae_upscale)
    throw ModelError(taesd.path + ": this TAESD makes images " + std::to_string(taesd_upscale) +
                     "x larger than its latents, this model's VAE " + std::to_string(vae_upscale) + "x");
}

// The model's files, once the TAESD (if any) is known to fit them: checked before any network is built.
ModelFiles checked_against(ModelFiles files, const TaesdOptions& taesd) {
  if (taesd.files) check_taesd_fits(*taesd.files, files);
  return files;
}

}  // namespace

Txt2ImgPipeline::Txt2ImgPipeline(ModelFiles files, ComputeType compute, MemoryOptions memory, TaesdOptions taesd)
    : files_(with_compute_type(checked_against(std::move(files), taesd), compute)),
      compute_(compute),
      memory_(std::move(memory)),
      arena_(std::make_unique<ActivationArena>()),
      weight_cache_status_(4),
      family_(conditioning_family_of(files_)),
      tokenizer_(make_tokenizer(files_.tokenizer_dir, files_.tokenizer_pad_token)),
      text_encoder_(build_with_weight_cache<ClipTextModel>(files_.text_encoder_config, *files_.text_encoder,
                                                           files_.text_encoder->compute_type(),
                                                           memory_.weight_cache_dir, text_encoder_weights_,
                                                           weight_cache_status_[0])),
      unet_(build_with_weight_cache<UNet2DConditionModel>(
          files_.unet_config, *files_.unet, compute, memory_.weight_cache_dir, unet_weights_, weight_cache_status_[1])),
      vae_decoder_(taesd.files && taesd.replaces_vae
                       ? std::nullopt
                       : std::make_optional(build_with_weight_cache<VaeDecoder>(files_.vae_config, *files_.vae, files_.vae->compute_type(),
                                                                                memory_.weight_cache_dir, vae_weights_,
                                                                                weight_cache_status_[2]))),
      scheduler_config_(parse_scheduler_config(files_.scheduler_config_json, files_.scheduler_config_path.empty()
                                                                                 ? SettingSource::single_file_default
                                                                                 : SettingSource::file)) {
  if (files_.text_encoder_2) {
    tokenizer_2_.emplace(make_tokenizer(files_.tokenizer_2_dir, "!"));
    text_encoder_2_.emplace(build_with_weight_cache<ClipTextModel>(files_.text_encoder_2_config, *files_.text_encoder_2,
                                                                   files_.text_encoder_2->compute_type(), memory_.weight_cache_dir,
                                                                   text_encoder_2_weights_, weight_cache_status_[3]));
  }
  if (memory_.weight_cache_dir.empty()) weight_cache_status_.clear();
  std::erase_if(weight_cache_status_, [](const WeightCacheStatus& s) { return s.component.empty(); });  // no VAE
  if (taesd.files) {
    // Small (10 MB in fp32 for madebyollin/taesd): packed at load, never cached on disk.
    taesd.files->weights->set_compute_type(without_int8(compute));
    taesd_decoder_.emplace(taesd.files->config, *taesd.files->weights);
    taesd_files_ = std::move(taesd.files);
  }
  // Built from the cache, the networks have not touched their weights' pages; a network maps them when it runs.
  for (const auto& cache : {text_encoder_weights_, unet_weights_, vae_weights_, text_encoder_2_weights_}) {
    if (cache) {
      cache->release_pages();
      cache->set_copy_in(memory_.low_memory, arena_.get());
      cache->set_keep_mapped(!memory_.low_memory);  // the fast mode: mapped at first use, then kept
    }
  }
}

// Between networks, with low_memory: what the last one freed is made available to the next before it takes
// its weights and allocates its activations, so that the process's peak is that of its largest stage, not the
// sum of all.
void Txt2ImgPipeline::end_stage() const {
  if (!memory_.low_memory) return;
  release_scratch_buffers();
  // With every network's weights copied in per stage (PackedWeightCache::set_copy_in), they go to the activation
  // arena's front (SDXL's two text encoders one after the other), or, should a live buffer lie there, to a heap
  // buffer that the next stage may reuse; without, the heap's
  // free memory goes back to the system. (Inside the networks' passes kernels take their scratch from the
  // arena, so the thread slots released above are only those of kernels run outside a pass.)
  const bool weights_copied_in = text_encoder_weights_ && unet_weights_ && (vae_weights_ || !vae_decoder_) &&
                                 (text_encoder_2_weights_ || !text_encoder_2_);
  if (!weights_copied_in) release_free_memory();
}

Tensor Txt2ImgPipeline::encode_prompts(const std::vector<std::string>& prompts, int clip_skip) const {
  if (family_.two_encoders_penultimate) {  // SDXL: both encoders' states (the size only matters for the time ids)
    const PackedWeightCache::Use weights(text_encoder_weights_.get()), weights_2(text_encoder_2_weights_.get());
    ActivationArena::Pass pass(arena_.get(), "text_encoders " + family_.name +
                                                 " prompts=" + std::to_string(prompts.size()) +
                                                 " clip_skip=" + std::to_string(clip_skip));
    return pass.output(
        encode_prompt_conditioning(family_, text_encoders(), prompts, clip_skip, 0, 0).encoder_hidden_states);
  }
  std::vector<std::vector<int>> ids;
  for (const std::string& p : prompts)
    ids.push_back(tokenizer_.encode(p, files_.text_encoder_config.max_position_embeddings));
  const PackedWeightCache::Use weights(text_encoder_weights_.get());
  ActivationArena::Pass pass(
      arena_.get(), "text_encoder prompts=" + std::to_string(ids.size()) + " clip_skip=" + std::to_string(clip_skip));
  return pass.output(text_encoder_.forward(ids, clip_skip));
}

TextEncoders Txt2ImgPipeline::text_encoders() const {
  return {&tokenizer_, &text_encoder_, tokenizer_2_ ? &*tokenizer_2_ : nullptr,
          text_encoder_2_ ? &*text_encoder_2_ : nullptr};
}

PromptConditioning Txt2ImgPipeline::encode_conditioning(const Txt2ImgRequest& r) const {
  const bool guided = classifier_free_guidance(r.cfg_scale);
  if (!family_.two_encoders_penultimate && !family_.text_time)  // SD 1.x/2.x: the one encoder, as before
    return {
        guided ? encode_prompts({r.negative_prompt, r.prompt}, r.clip_skip) : encode_prompts({r.prompt}, r.clip_skip),
        Tensor(), Tensor()};
  const PackedWeightCache::Use weights(text_encoder_weights_.get()), weights_2(text_encoder_2_weights_.get());
  ActivationArena::Pass pass(arena_.get(), "text_encoders " + family_.name + " guided=" + std::to_string(guided) +
                                               " negative=" + std::to_string(!r.negative_prompt.empty()) +
                                               " clip_skip=" + std::to_string(r.clip_skip));
  PromptConditioning c = encode_guidance_conditioning(family_, text_encoders(), r.negative_prompt, r.prompt, guided,
                                                      r.clip_skip, r.height, r.width);
  return {pass.output(c.encoder_hidden_states), c.text_embeds.empty() ? Tensor() : pass.output(c.text_embeds),
          pass.output(c.time_ids)};
}

// One request's state in the denoising loop: its own scheduler (multistep samplers keep a history) and its own
// generator (ancestral samplers draw their noise from it), so that batching it with others changes nothing it
// computes but the UNet's batch.
struct Txt2ImgPipeline::Denoising {
  Scheduler* scheduler;
  TorchGenerator generator;       // copies share one state, like references to a torch.Generator
  Tensor latents;                 // [n, C, h, w]
  PromptConditioning embeddings;  // [uncond x n, cond x n] with guidance, else [cond x n]
  float cfg_scale = 1;
  int request = 0;  // its index in run_batch()'s requests
  // An LCM-distilled UNet's guidance embedding [n, time_cond_proj_dim] (timestep_cond()); empty for other UNets.
  Tensor timestep_cond;
  // Token merging's generator (nets/token_merging.h), seeded like `generator` but drawn from apart; none when off.
  std::optional<TorchGenerator> tome_generator;
};

bool Txt2ImgPipeline::classifier_free_guidance(float cfg_scale) const {
  // StableDiffusionPipeline.do_classifier_free_guidance: guidance_scale > 1 and time_cond_proj_dim is None.
  return cfg_scale > 1.0f && files_.unet_config.time_cond_proj_dim == 0;
}

Tensor Txt2ImgPipeline::timestep_cond(float cfg_scale, int64_t images) const {
  if (files_.unet_config.time_cond_proj_dim == 0) return {};
  return guidance_scale_embedding(cfg_scale, images, files_.unet_config.time_cond_proj_dim);
}

// The UNet's batch is [uncond of every member, cond of every member], as diffusers' cat([latents] * 2) is for one;
// these are its embeddings, in that order. One member's are its own; a batch's change only when a member leaves.
PromptConditioning Txt2ImgPipeline::batch_embeddings(const std::vector<Denoising*>& batch) {
  if (batch.size() == 1) return batch.front()->embeddings;
  const bool guided = batch.front()->embeddings.encoder_hidden_states.dim(0) == 2 * batch.front()->latents.dim(0);
  std::vector<PromptConditioning> uncond, cond;
  for (const Denoising* d : batch) {
    const int64_t n = d->latents.dim(0);
    if (guided) {
      uncond.push_back(d->embeddings.rows(0, n));
      cond.push_back(d->embeddings.rows(n, 2 * n));
    } else {
      cond.push_back(d->embeddings);
    }
  }
  uncond.insert(uncond.end(), cond.begin(), cond.end());
  return PromptConditioning::concat(uncond);
}

// A batch's rows are [uncond of every member, cond of every member] (batch_embeddings); these are the rows of
// `kept`, a subset of `batch` in the same order.
Tensor Txt2ImgPipeline::batch_rows(const Tensor& rows, const std::vector<Denoising*>& batch,
                                   const std::vector<Denoising*>& kept) {
  const bool guided = batch.front()->embeddings.encoder_hidden_states.dim(0) == 2 * batch.front()->latents.dim(0);
  int64_t images = 0;
  for (const Denoising* d : batch) images += d->latents.dim(0);
  std::vector<Tensor> parts;
  for (int half = 0; half < (guided ? 2 : 1); ++half) {
    int64_t offset = half * images;
    size_t k = 0;
    for (const Denoising* d : batch) {
      const int64_t n = d->latents.dim(0);
      if (k < kept.size() && kept[k] == d) {
        parts.push_back(rows.slice0(offset, offset + n));
        ++k;
      }
      offset += n;
    }
  }
  return concat0(parts);
}

void Txt2ImgPipeline::denoise_step(const std::vector<Denoising*>& batch, const PromptConditioning& embeddings, int i,
                                   UNetStepCache* step_cache, bool full_pass,
                                   const TokenMergeOptions& tome_options) const {
  const Scheduler& schedule = *batch.front()->scheduler;  // every member has the same timesteps
  const bool guided = batch.front()->embeddings.encoder_hidden_states.dim(0) == 2 * batch.front()->latents.dim(0);
  // Token merging: each member draws its destinations from its own generator, for all its rows.
  std::optional<TokenMergeContext> tome;
  if (tome_options.enabled()) {
    tome = TokenMergeContext{tome_options, batch.front()->latents.dim(2), batch.front()->latents.dim(3), {}, {}};
    for (int half = 0; half < (guided ? 2 : 1); ++half)
      for (size_t m = 0; m < batch.size(); ++m)
        tome->row_generator.insert(tome->row_generator.end(), static_cast<size_t>(batch[m]->latents.dim(0)),
                                   static_cast<int>(m));
    for (const Denoising* d : batch) tome->generators.push_back(*d->tome_generator);
  }
  const TokenMergeContext* merging = tome ? &*tome : nullptr;
  // The scaled latents of every member, twice with guidance (the order batch_embeddings() gives).
  std::vector<Tensor> inputs;
  int64_t images = 0;
  for (Denoising* d : batch) {
    inputs.push_back(d->scheduler->scale_model_input(d->latents, i));
    images += d->latents.dim(0);
  }
  if (guided) {
    const std::vector<Tensor> once = inputs;
    inputs.insert(inputs.end(), once.begin(), once.end());
  }
  const Tensor scaled = inputs.size() == 1 ? inputs.front() : concat0(inputs);
  // An LCM UNet's guidance embedding, one row per image (never with guidance: classifier_free_guidance()).
  Tensor cond;
  if (!batch.front()->timestep_cond.empty()) {
    std::vector<Tensor> conds;
    for (const Denoising* d : batch) conds.push_back(d->timestep_cond);
    cond = conds.size() == 1 ? conds.front() : concat0(conds);
  }
  const PackedWeightCache::Use weights(unet_weights_.get());  // run_batch() holds one across all steps
  const float t = static_cast<float>(schedule.timesteps()[i]);
  const Tensor noise_pred = [&] {
    const Tensor& states = embeddings.encoder_hidden_states;
    const UNet2DConditionModel::AddedConditions added{embeddings.text_embeds, embeddings.time_ids, cond};
    const std::string shapes = shape_to_string(scaled.shape()) + " " + shape_to_string(states.shape());
    if (!step_cache) {
      ActivationArena::Pass pass(arena_.get(), "unet " + shapes);
      return pass.output(unet_.forward(scaled, t, states, added, merging));
    }
    const std::string branch = " branch " + std::to_string(step_cache->branch);
    if (!full_pass) {
      ActivationArena::Pass pass(arena_.get(), "unet shallow " + shapes + branch);
      return pass.output(unet_.forward_shallow(scaled, t, states, *step_cache, added, merging));
    }
    // The features outlive the pass: copied out of the arena, into the last full step's buffer when it fits.
    Tensor previous = std::move(step_cache->deep_features);
    ActivationArena::Pass pass(arena_.get(), "unet caching " + shapes + branch);
    Tensor out = pass.output(unet_.forward_and_cache(scaled, t, states, *step_cache, added, merging));
    Tensor& features = step_cache->deep_features;
    if (previous.shape() == features.shape() && previous.storage_unique()) {
      std::copy(features.data(), features.data() + features.numel(), previous.data());
      features = std::move(previous);
    } else {
      features = pass.output(features);
    }
    return out;
  }();
  int64_t offset = 0;
  for (Denoising* d : batch) {
    const int64_t n = d->latents.dim(0);
    if (!guided) {
      d->latents = d->scheduler->step(noise_pred.slice0(offset, offset + n), i, d->latents, d->generator);
    } else {
      // noise_pred.chunk(2); noise_pred_uncond + guidance_scale * (noise_pred_text - noise_pred_uncond), in this order.
      const Tensor uncond = noise_pred.slice0(offset, offset + n),
                   cond = noise_pred.slice0(images + offset, images + offset + n);
      Tensor guided_pred(uncond.shape());
      for (int64_t j = 0; j < guided_pred.numel(); ++j)
        guided_pred[j] = uncond[j] + d->cfg_scale * (cond[j] - uncond[j]);
      d->latents = d->scheduler->step(guided_pred, i, d->latents, d->generator);
    }
    offset += n;
  }
}

Tensor Txt2ImgPipeline::denoise_step(Scheduler& scheduler, int i, const Tensor& latents, const Tensor& embeddings,
                                     float cfg_scale, TorchGenerator& generator) const {
  Denoising d{&scheduler,
              generator,
              latents,
              PromptConditioning{embeddings, Tensor(), Tensor()},
              cfg_scale,
              0,
              timestep_cond(cfg_scale, latents.dim(0)),
              {}};
  denoise_step({&d}, d.embeddings, i);
  return d.latents;
}

Tensor Txt2ImgPipeline::decode_latents(const Tensor& latents) const {
  if (!vae_decoder_) return taesd_decode(latents);
  // latents / scaling_factor, divided (not multiplied by the reciprocal) to round as diffusers does.
  Tensor scaled(latents.shape());
  for (int64_t j = 0; j < latents.numel(); ++j) scaled[j] = latents[j] / files_.vae_config.scaling_factor;
  const PackedWeightCache::Use weights(vae_weights_.get());
  ActivationArena::Pass pass(arena_.get(), "vae_decoder " + shape_to_string(scaled.shape()));
  return pass.output(vae_decoder_->forward(scaled));
}

Tensor Txt2ImgPipeline::preview_latents(const Tensor& latents) const {
  if (!taesd_decoder_) throw InvalidArgument("previews need a TAESD (--vae or --preview-vae)");
  return taesd_decode(latents);
}

// StableDiffusionPipeline with vae=AutoencoderTiny divides by the TAESD's own scaling_factor (1.0), not the model
// VAE's 0.18215: TAESD decodes the UNet's latents as they are.
Tensor Txt2ImgPipeline::taesd_decode(const Tensor& latents) const {
  Tensor scaled(latents.shape());
  for (int64_t j = 0; j < latents.numel(); ++j) scaled[j] = latents[j] / taesd_files_->config.scaling_factor;
  ActivationArena::Pass pass(arena_.get(), "taesd_decoder " + shape_to_string(scaled.shape()));
  return pass.output(taesd_decoder_->forward(scaled));
}

ResolvedSchedulerConfig Txt2ImgPipeline::scheduler_settings(const Txt2ImgRequest& request) const {
  return resolve_scheduler_config(request.sampler, scheduler_config_, SchedulerOverrides{request.timestep_spacing});
}

bool batchable(const Txt2ImgRequest& a, const Txt2ImgRequest& b) {
  return a.steps == b.steps && a.cfg_scale == b.cfg_scale && a.sampler == b.sampler &&
         a.timestep_spacing == b.timestep_spacing && a.width == b.width && a.height == b.height &&
         a.clip_skip == b.clip_skip && a.cache_interval == b.cache_interval && a.cache_branch == b.cache_branch &&
         a.cache_schedule == b.cache_schedule && a.cache_center == b.cache_center && a.cache_power == b.cache_power &&
         a.tome_ratio == b.tome_ratio && a.tome_max_downsample == b.tome_max_downsample;
}

Txt2ImgPipeline::Result Txt2ImgPipeline::run(const Txt2ImgRequest& request, const StepCallback& on_step) const {
  std::vector<Result> results = run_batch({request}, [&](int, int step, int steps, const Tensor& latents) {
    if (on_step) on_step(step, steps, latents);
    return true;
  });
  return std::move(results.front());
}

std::vector<Txt2ImgPipeline::Result> Txt2ImgPipeline::run_batch(const std::vector<Txt2ImgRequest>& requests,
                                                                const BatchStepCallback& on_step) const {
  const auto t_start = std::chrono::steady_clock::now();
  if (requests.empty()) throw InvalidArgument("no requests to run");
  int total_images = 0;
  for (const Txt2ImgRequest& request : requests) {
    validate(request);
    if (!batchable(request, requests.front()))
      throw InvalidArgument("requests run in one batch must agree on size, steps, sampler, guidance and clip skip");
    total_images += request.batch_size;
  }
  if (total_images > kMaxBatch)
    throw InvalidArgument("a batch holds at most " + std::to_string(kMaxBatch) + " images, got " +
                          std::to_string(total_images));
  const Txt2ImgRequest& shared = requests.front();
  // SD reads hidden_states[-(clip_skip + 1)] (clip_skip up to N - 1 here), SDXL hidden_states[-(clip_skip + 2)] of
  // each encoder, which reaches the embeddings' output at clip_skip = N - 1.
  if (shared.clip_skip >= files_.text_encoder_config.num_hidden_layers ||
      (text_encoder_2_ && shared.clip_skip >= files_.text_encoder_2_config.num_hidden_layers))
    throw InvalidArgument("clip skip exceeds the text encoder's layers", "clip_skip");
  const int64_t channels = files_.unet_config.in_channels;
  // The VAE downsamples by 2 per level except the last: 8x for the 4-level SD VAE.
  const int64_t factor = int64_t{1} << (files_.vae_config.block_out_channels.size() - 1);
  if (shared.width % factor != 0 || shared.height % factor != 0)
    throw InvalidArgument("width and height must be multiples of " + std::to_string(factor) + " for this model");
  for (const Txt2ImgRequest& request : requests) {
    const Shape latent_shape = {request.batch_size, channels, request.height / factor, request.width / factor};
    if (!request.latents.empty() && request.latents.shape() != latent_shape)
      throw InvalidArgument("initial latents must be " + shape_to_string(latent_shape) + ", got " +
                            shape_to_string(request.latents.shape()));
  }
  if (shared.cache_branch >= unet_.deep_cache_branches())
    throw InvalidArgument("cache branch must be between 0 and " + std::to_string(unet_.deep_cache_branches() - 1) +
                              " for this UNet, got " + std::to_string(shared.cache_branch),
                          "cache_branch");
  const SchedulerConfig config = scheduler_settings(shared).config;
  std::vector<std::unique_ptr<Scheduler>> schedulers;
  for (size_t r = 0; r < requests.size(); ++r) {
    schedulers.push_back(make_scheduler(shared.sampler, config));
    schedulers.back()->set_timesteps(shared.steps);
  }
  // Which UNet calls run in full, before any work: a quadratic schedule may find no fit for these calls.
  const std::vector<bool> full_passes = full_unet_passes(step_cache_schedule(shared), schedulers.front()->num_steps());
  std::vector<Result> results(requests.size());

  // Each request's prompts are encoded on their own, as run() alone would: the text encoder costs little, and
  // its embeddings then do not depend on the batch.
  auto t0 = std::chrono::steady_clock::now();
  std::vector<Denoising> members;
  for (size_t r = 0; r < requests.size(); ++r) {
    const Txt2ImgRequest& request = requests[r];
    // repeat_each on [uncond, cond] gives diffusers' cat([negative x n, prompt x n]) order.
    members.push_back(Denoising{schedulers[r].get(),
                                TorchGenerator(request.seed),
                                Tensor(),
                                encode_conditioning(request).repeat_each(request.batch_size),
                                request.cfg_scale,
                                static_cast<int>(r),
                                timestep_cond(request.cfg_scale, request.batch_size),
                                {}});
    if (request.tome_ratio > 0) members.back().tome_generator = TorchGenerator(request.seed);
  }
  end_stage();
  const double text_encode_s = seconds_since(t0);

  for (Denoising& d : members) {
    const Txt2ImgRequest& request = requests[d.request];
    const Shape latent_shape = {request.batch_size, channels, request.height / factor, request.width / factor};
    // Given latents are copied: scale_ below must not write into the caller's tensor.
    d.latents = request.latents.empty() ? d.generator.randn(latent_shape) : request.latents.clone();
    scale_(d.latents, static_cast<float>(d.scheduler->init_noise_sigma()));
  }

  std::vector<Denoising*> batch;
  for (Denoising& d : members) batch.push_back(&d);
  const int steps = schedulers.front()->num_steps();
  std::vector<double> step_times;
  // The UNet's weights stay in memory for the whole loop (each step's own Use is then only a count), and leave
  // before the VAE decoder takes its own.
  std::optional<PackedWeightCache::Use> unet_weights(unet_weights_.get());
  PromptConditioning embeddings = batch_embeddings(batch);
  std::vector<Denoising*> staying;  // the members still in the batch after a step
  staying.reserve(batch.size());
  std::optional<UNetStepCache> step_cache;
  if (shared.cache_interval > 1) step_cache = UNetStepCache{shared.cache_branch, Tensor()};
  for (int i = 0; i < steps && !batch.empty(); ++i) {
    t0 = std::chrono::steady_clock::now();
    denoise_step(batch, embeddings, i, step_cache ? &*step_cache : nullptr, full_passes[i],
                 TokenMergeOptions{shared.tome_ratio, shared.tome_max_downsample});
    step_times.push_back(seconds_since(t0));
    // A member the callback lets go leaves the batch: the next step's UNet runs without it.
    if (!on_step) continue;
    staying.clear();
    for (Denoising* d : batch)
      if (on_step(d->request, i, steps, d->latents)) staying.push_back(d);
    if (!staying.empty() && staying.size() != batch.size()) {
      embeddings = batch_embeddings(staying);
      if (step_cache) step_cache->deep_features = batch_rows(step_cache->deep_features, batch, staying);
    }
    batch.swap(staying);
  }
  unet_weights.reset();
  end_stage();

  // Decoded one request at a time: the VAE gains little from a batch, and its activations are the largest.
  for (Denoising* d : batch) {
    t0 = std::chrono::steady_clock::now();
    Result& result = results[d->request];
    result.image = decode_latents(d->latents);
    result.times.vae_decode_s = seconds_since(t0);
    result.latents = std::move(d->latents);
  }
  end_stage();
  for (Result& result : results) {
    result.times.text_encode_s = text_encode_s;
    result.times.denoise_step_s = step_times;
    result.times.total_s = seconds_since(t_start);
  }
  return results;
}

}  // namespace sdcpu
