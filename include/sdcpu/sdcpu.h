// sdcpu public API: load a Stable Diffusion model once, then generate images from prompts.
//
//   auto pipe = sdcpu::Pipeline::load("path/to/model");          // diffusers folder or .safetensors
//   sdcpu::GenerateOptions opt;  opt.prompt = "a lighthouse at dusk";  opt.seed = 42;
//   for (const sdcpu::Image& img : pipe->generate(opt)) img.save_png("out.png");
//
// Failures throw sdcpu::Error (include/sdcpu/error.h) with a message that names the problem.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "sdcpu/error.h"

namespace sdcpu {

inline constexpr const char* kVersion = "0.1.0";

// The samplers sdcpu implements, under the names the CLI and the API accept.
std::vector<std::string> sampler_names();

// AUTOMATIC1111's display name of a sampler ("euler_a" -> "Euler a", "pndm" -> "PLMS"), as the PNG parameters
// write it.
std::string a1111_sampler_name(const std::string& sampler);

// Where the weight cache goes unless told otherwise (README, "Weight cache and memory"): $SDCPU_WEIGHT_CACHE
// when that is set (set but empty: "" = no cache), else $XDG_CACHE_HOME/sdcpu/weights (an absolute
// $XDG_CACHE_HOME, as the XDG spec asks), else $HOME/.cache/sdcpu/weights, else "" (no cache).
std::string default_weight_cache_dir();

struct LoadOptions {
  // "fp16" selects *.fp16.safetensors weights in a diffusers folder when present.
  std::string variant;
  // Threads for all compute; 0 = one per physical core this process may use.
  int threads = 0;
  // Bind compute thread i to core i (a process-wide setting, like `threads`).
  bool pin_threads = false;
  // "fp32" (matches diffusers within 1e-4), "bf16" (bfloat16 products with fp32 accumulation: about twice as
  // fast and half the weight memory on CPUs with AVX512_BF16 or AMX; refused on others), or "auto" (bf16 where
  // the CPU has it natively, else fp32).
  std::string precision = "fp32";
  // A directory for prepacked weights (README, "Weight cache and memory"): the first load writes each network's
  // weights there in the layout the kernels use (streamed, so it needs no more memory than later loads), later
  // loads map them instead of converting the checkpoint again. By default default_weight_cache_dir(): the user's
  // cache folder. Empty: no cache. A directory that cannot be written leaves the weights in memory, as without
  // one, and on_notice says so.
  std::string weight_cache_dir = default_weight_cache_dir();
  // One stage's weights and activations in memory at a time (README, "Weight cache and memory"), the default
  // ("lean"). With a weight cache each network's weights are read in from the page cache when it runs and their
  // memory is reused by the next stage: the peak is then the UNet's weights plus its activations (bf16 512x512:
  // about 2.0 GB instead of 3.0). Without a cache it only hands each stage's freed memory back to the system.
  // false ("fast", `--memory fast`): every network's weights stay in memory once used; a little faster per image.
  bool low_memory = true;
  // Receives one line when loading could not do what the options asked and did something else (a weight cache
  // directory that cannot be written: the weights are then packed in memory). May be empty.
  std::function<void(const std::string&)> on_notice;
  // A TAESD (madebyollin's Tiny AutoEncoder: a diffusers AutoencoderTiny folder such as madebyollin/taesd, or its
  // taesd_decoder.safetensors) that decodes the images instead of the model's VAE: ~30x less work, slightly
  // softer pictures (README, "TAESD"). Refused when its latent space is not the model's. Empty: the model's VAE.
  std::string vae_path;
  // A TAESD that only decodes previews (GenerateOptions::preview_every) while the model's VAE decodes the images.
  // Not with vae_path, whose TAESD makes the previews too.
  std::string preview_vae_path;
  // A single-file checkpoint's prediction type, "epsilon" or "v_prediction", over what its .yaml says or diffusers'
  // rule gives (README, "SD 2.x single files"). Empty: as those say. Refused for diffusers folders.
  std::string prediction_type;
  // The model family whose defaults apply (model_family_names(); README, "Model families"); empty: the one the files
  // describe. It changes defaults only: how a model runs follows from its files (an LCM UNet is always run as one).
  std::string family;
};

// What kind of model was loaded and how it is meant to be run (README, "Model families"): chosen at load from the
// files, or by LoadOptions::family. Callers apply the defaults to the options their user did not give.
struct ModelFamily {
  std::string name;    // sd1 | sd2 | sd2-v | sd-turbo | lcm
  std::string reason;  // one line: what in the files chose it, or that the user did
  int width = 512;     // diffusers' default size: the UNet's sample_size times the VAE's scale factor
  int height = 512;
  int steps = 20;
  float cfg_scale = 7.5f;
  std::string sampler = "dpmpp_2m";
  // An LCM-distilled UNet (time_cond_proj_dim): the guidance scale enters the UNet as an embedding, there is no
  // unconditional pass and the negative prompt is unused, as in diffusers. Follows from the files, not the name.
  bool embedded_guidance = false;
};

// The model families sdcpu knows, for LoadOptions::family.
std::vector<std::string> model_family_names();

// GenerateOptions::seed for "draw a random seed": -1 as an unsigned number, as AUTOMATIC1111 takes -1. The seed
// drawn is in [0, 2^32 - 2], as A1111 draws them, and is returned in Image::seed and the PNG parameters.
inline constexpr uint64_t kRandomSeed = ~uint64_t{0};

// A random seed as AUTOMATIC1111 draws one (0..4294967293), from the system's random source.
uint64_t random_seed();

struct Image;

struct GenerateOptions {
  std::string prompt;
  std::string negative_prompt;
  int steps = 20;
  float cfg_scale = 7.5f;  // classifier-free guidance; <= 1 runs the conditional half only
  std::string sampler = "dpmpp_2m";
  // "leading", "linspace" or "trailing" overrides the model's timestep_spacing; empty: as the model's scheduler
  // config says, read as diffusers reads it (README, "How the sampler's settings are chosen").
  std::string timestep_spacing;
  uint64_t seed = 0;  // image k of a batch uses seed + k, as AUTOMATIC1111 does; kRandomSeed: a random one
  int width = 512;
  int height = 512;
  int batch_count = 1;  // images generated one after another
  int clip_skip = 0;    // text encoder layers to skip from the end (0 = last layer)
  // Step caching (DeepCache, Ma et al. 2023; README "Step caching"): the UNet runs in full every `cache_interval`
  // steps and keeps its deep features; the steps between reuse them and run only the layers above branch
  // `cache_branch` (0: the shallowest, fastest; up to 3 x levels - 1, 11 for SD 1.x). 1 = off. An approximation:
  // `sdcpu bench --quality` measures what it costs.
  int cache_interval = 1;
  int cache_branch = 0;
  // Which steps run in full: "uniform" (0, N, 2N, ...) or "quadratic" (DeepCache's non-uniform schedule: as many,
  // densest around step `cache_center`, -1 = the middle, spaced by `cache_power` > 1).
  std::string cache_schedule = "uniform";
  int cache_center = -1;
  double cache_power = 1.4;
  // Token merging (ToMe, Bolya and Hoffman 2023; README "Token merging"): the self-attention of the UNet blocks
  // downsampled at most `tome_max_downsample` times runs on a fraction `tome_ratio` fewer tokens, merged by
  // similarity and unmerged after, as tomesd does. 0 = off; below 1. An approximation, like step caching.
  double tome_ratio = 0.0;
  int tome_max_downsample = 1;
  // Every `preview_every` denoising steps (0: never; the last step is left out, the image follows it), the latents
  // so far decoded by the TAESD (LoadOptions::vae_path or preview_vae_path; InvalidArgument without one) are
  // handed to on_preview with the image's index in the batch and the steps done: a rough picture for a few
  // percent of a step.
  int preview_every = 0;
  std::function<void(int image, int step, const Image& preview)> on_preview;
};

struct Image {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> rgb;  // height x width x 3
  uint64_t seed = 0;
  std::string parameters;  // generation parameters in AUTOMATIC1111's "parameters" format
  // Writes an 8-bit RGB PNG with the parameters in a "parameters" text chunk.
  void save_png(const std::string& path) const;
  // The same PNG's bytes.
  std::vector<uint8_t> encode_png() const;
};

// Throws InvalidArgument naming the first invalid option (sizes, steps, guidance, sampler, timestep spacing, clip
// skip, batch count, prompts that are not UTF-8) without loading anything: what generate() checks before any
// work, except what depends on the model (e.g. clip skip against its text encoder's layers).
void validate(const GenerateOptions& options);

// Called after each denoising step: image index within the batch, steps done, total steps.
using ProgressCallback = std::function<void(int image, int step, int steps)>;

// Whether two requests can be generated together by Pipeline::generate_batch: the same width, height, steps,
// sampler, timestep spacing, guidance, clip skip and step caching (prompts, negative prompts, seeds and batch counts
// may differ).
bool batchable(const GenerateOptions& a, const GenerateOptions& b);

// Called after each denoising step for every image of a batch: the request's index, the image's index within the
// request, steps done, total steps. Returning false stops that request: its images leave the batch at once and
// generate_batch returns none for it.
using BatchProgressCallback = std::function<bool(int request, int image, int step, int steps)>;

class Pipeline {
 public:
  // Opens a diffusers folder or a single-file .safetensors checkpoint and builds every network.
  static std::unique_ptr<Pipeline> load(const std::string& model_path, const LoadOptions& options = {});
  virtual ~Pipeline() = default;

  // Runs text-to-image. Throws InvalidArgument for invalid options before doing any work.
  virtual std::vector<Image> generate(const GenerateOptions& options, const ProgressCallback& progress = {}) = 0;

  // Generates several batchable() requests together: their images (image k of request j with seed_j + k) go
  // through the UNet up to `max_batch` (1..64) at a time, one UNet call per step for all of them. Each image is
  // the one generate(requests[j]) gives, up to the kernels' rounding at another batch size (README, "Batching
  // across requests"). Returns each request's images, in order. Throws InvalidArgument for options that are
  // invalid or not batchable, before any work.
  virtual std::vector<std::vector<Image>> generate_batch(const std::vector<GenerateOptions>& requests, int max_batch,
                                                         const BatchProgressCallback& progress = {}) = 0;

  // What was detected: layout, architecture, family and its defaults, configurations, tensors ignored.
  virtual std::string describe() const = 0;

  // The model's family and its defaults (ModelFamily).
  virtual const ModelFamily& family() const = 0;

  // The scheduler settings `options.sampler` would run with (its options.timestep_spacing included): every key
  // of its diffusers class, the value in effect and where it came from (the model's file, diffusers' single-file
  // default, the class default, the sampler's name, or the option). Throws InvalidArgument for a bad sampler or
  // spacing.
  virtual std::string describe_scheduler(const GenerateOptions& options) const = 0;
};

// `sdcpu bench`: load a model, generate, and measure each stage, throughput per batch size, peak memory
// and the UNet's efficiency against the machine's measured FMA peak (README, "Benchmark").
struct BenchOptions {
  std::string model_path;
  std::string prediction_type;  // as LoadOptions::prediction_type
  int width = 512;
  int height = 512;
  int steps = 20;
  std::string sampler = "dpmpp_2m";
  float cfg_scale = 7.5f;
  int cache_interval = 1;  // step caching, as GenerateOptions::cache_interval, cache_branch, cache_schedule...
  int cache_branch = 0;
  std::string cache_schedule = "uniform";
  int cache_center = -1;
  double cache_power = 1.4;
  double tome_ratio = 0.0;  // token merging, as GenerateOptions::tome_ratio and tome_max_downsample
  int tome_max_downsample = 1;
  std::string precision = "fp32";      // fp32 | bf16 | auto (as LoadOptions::precision)
  std::vector<int> batch_sizes = {1};  // images per UNet call; the first also gives the per-stage figures
  int runs = 3;                        // timed runs per batch size, after a warm-up run
  int threads = 0;                     // 0: one per physical core
  bool pin_threads = false;            // bind compute thread i to core i
  // As LoadOptions (the same defaults); the fp32 reference never uses the cache.
  std::string weight_cache_dir = default_weight_cache_dir();
  bool low_memory = true;
  // With a reduced precision: the same request once more in fp32 for the PSNR against it. Off for the largest
  // models (SDXL at 1024x1024), where the fp32 pipeline would take as long as the rest and twice the memory.
  bool fp32_reference = true;
  // As LoadOptions::vae_path: the TAESD decodes; the report adds its FLOPs, the full VAE's decode time on the
  // same latents and the TAESD image's PSNR against the full VAE's.
  std::string vae_path;
  std::string prompt = "a photo of an astronaut riding a horse on mars";
  uint64_t seed = 42;
  // Receives a line per finished run (progress for a human); may be empty.
  std::function<void(const std::string&)> log;
};

struct BenchResult {
  std::string table;  // human-readable
  std::string json;   // machine-readable, keys documented in the README
};

// Throws InvalidArgument for bad options before loading anything, ModelError/IoError for the model.
BenchResult bench(const BenchOptions& options);

// `sdcpu bench --quality`: a fixed set of prompts and seeds generated in the reference mode (fp32, no
// approximation) and in every mode under test; per mode the time per image and PSNR, SSIM and latent error
// against the reference image of the same prompt and seed (README, "Quality against fp32").
struct QualityBenchOptions {
  std::string model_path;
  std::string prediction_type;  // as LoadOptions::prediction_type
  int width = 512;
  int height = 512;
  int steps = 20;
  std::string sampler = "dpmpp_2m";
  float cfg_scale = 7.5f;
  // The modes under test: "fp32", "bf16", "int8" or "auto", each optionally with step caching: "+cacheN" (every N
  // steps), "+branchB", "+quadratic", and token merging "+tomeP" (ratio P percent), e.g. "bf16+cache3",
  // "int8+cache3+tome50".
  std::vector<std::string> modes = {"bf16"};
  // What every mode is compared with: "fp32" (exact), or another mode, e.g. "bf16" to see what int8 or an
  // approximation costs on top of bf16.
  std::string reference = "fp32";
  int prompts = 8;  // the first N (1..16) of the fixed prompt set
  int threads = 0;
  bool pin_threads = false;
  // For the modes under test, as LoadOptions (the same defaults); the fp32 reference never uses the cache.
  std::string weight_cache_dir = default_weight_cache_dir();
  bool low_memory = true;
  std::function<void(const std::string&)> log;
};

// Throws InvalidArgument for bad options before loading anything, ModelError/IoError for the model.
BenchResult bench_quality(const QualityBenchOptions& options);

}  // namespace sdcpu
