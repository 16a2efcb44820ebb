// sdcpu generate: text to image(s), written as PNGs with their generation parameters.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include "commands.h"
#include "progress_bar.h"
#include "sdcpu/sdcpu.h"

namespace sdcpu::app {
namespace {

// out.png -> out-preview.png: where --preview-every writes its previews (overwritten each time).
std::string preview_path(const std::string& path) {
  std::filesystem::path p(path);
  return (p.parent_path() / (p.stem().string() + "-preview" + p.extension().string())).string();
}

// out.png -> out-2.png for the k-th image of a batch (k from 1; the first keeps the name).
std::string numbered(const std::string& path, int k) {
  if (k == 0) return path;
  std::filesystem::path p(path);
  return (p.parent_path() / (p.stem().string() + "-" + std::to_string(k + 1) + p.extension().string())).string();
}

struct GenerateArgs {
  std::string model;
  LoadOptions load;
  GenerateOptions gen;
  int64_t seed = 0;  // -1: random
  std::string output = "sdcpu.png";
  bool quiet = false;
};

// Refuses an output path that cannot be written before any work is done: its folder must exist and be
// writable, and the path must not be a folder. (Nothing is created: a failed run leaves no file behind.)
void check_writable(const std::string& path) {
  namespace fs = std::filesystem;
  const fs::path p(path);
  std::error_code ec;
  if (fs::is_directory(p, ec)) throw IoError("cannot create " + path + ": it is a directory");
  const fs::path dir = p.parent_path().empty() ? fs::path(".") : p.parent_path();
  if (!fs::is_directory(dir, ec)) throw IoError("cannot create " + path + ": no such directory " + dir.string());
  if (access(dir.c_str(), W_OK) != 0) throw IoError("cannot create " + path + ": " + dir.string() + " is not writable");
}

int run_generate(GenerateArgs& a) {
  // Everything that does not need the model is checked before it loads.
  if (a.seed < -1) throw InvalidArgument("seed must be >= 0, or -1 for a random one");
  a.gen.seed = a.seed == -1 ? kRandomSeed : static_cast<uint64_t>(a.seed);
  validate(a.gen);
  if (a.gen.preview_every > 0 && a.load.vae_path.empty() && a.load.preview_vae_path.empty())
    throw InvalidArgument("--preview-every needs a TAESD to decode the previews: give --vae or --preview-vae");
  if (a.gen.preview_every == 0 && !a.load.preview_vae_path.empty())
    throw InvalidArgument("--preview-vae is for previews: give --preview-every N too");
  for (int k = 0; k < a.gen.batch_count; ++k) check_writable(numbered(a.output, k));
  if (a.gen.preview_every > 0) {
    const std::string preview = preview_path(a.output);
    check_writable(preview);
    a.gen.on_preview = [preview](int, int, const Image& image) { image.save_png(preview); };
  }
  const auto t0 = std::chrono::steady_clock::now();
  auto pipe = Pipeline::load(a.model, a.load);
  const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!a.quiet) std::fprintf(stderr, "loaded %s in %.2fs\n", a.model.c_str(), load_s);
  ProgressBar bar(!a.quiet);
  int current = 0;
  bar.restart();
  auto images = pipe->generate(a.gen, [&](int image, int step, int steps) {
    if (image != current) {
      current = image;
      bar.restart();
    }
    bar.update("image " + std::to_string(image + 1) + "/" + std::to_string(a.gen.batch_count), step, steps);
  });
  for (size_t k = 0; k < images.size(); ++k) {
    const std::string path = numbered(a.output, static_cast<int>(k));
    images[k].save_png(path);
    std::printf("%s (seed %llu)\n", path.c_str(), static_cast<unsigned long long>(images[k].seed));
  }
  return 0;
}

}  // namespace

Command add_generate_command(CLI::App& app) {
  auto a = std::make_shared<GenerateArgs>();
  GenerateOptions& gen = a->gen;
  auto* cli = app.add_subcommand("generate", "Generate images from a prompt");
  cli->add_option("--model,-m", a->model, "Diffusers folder or single-file .safetensors checkpoint")->required();
  cli->add_option("--prompt,-p", gen.prompt, "What to draw")->required();
  cli->add_option("--negative-prompt,-n", gen.negative_prompt, "What to avoid");
  cli->add_option("--steps", gen.steps, "Denoising steps")->capture_default_str();
  cli->add_option("--cfg-scale", gen.cfg_scale, "Classifier-free guidance scale (<= 1: no guidance)")
      ->capture_default_str();
  add_sampler_option(*cli, gen.sampler, "Sampler (AUTOMATIC1111's name)");
  add_timestep_spacing_option(*cli, gen.timestep_spacing);
  cli->add_option("--seed", a->seed, "Seed (-1: random); image k of a batch uses seed + k")->capture_default_str();
  cli->add_option("--width,-W", gen.width, "Image width, a multiple of 8")->capture_default_str();
  cli->add_option("--height,-H", gen.height, "Image height, a multiple of 8")->capture_default_str();
  cli->add_option("--batch-count", gen.batch_count, "Images to generate, one after another")->capture_default_str();
  cli->add_option("--clip-skip", gen.clip_skip, "Text encoder layers to skip from the end")->capture_default_str();
  add_step_cache_options(*cli, gen.cache_interval, gen.cache_branch);
  add_token_merging_options(*cli, gen.tome_ratio, gen.tome_max_downsample);
  cli->add_option("--threads", a->load.threads, "Compute threads (0: one per physical core)")->capture_default_str();
  cli->add_flag("--pin", a->load.pin_threads, "Bind compute thread i to core i");
  cli->add_option("--precision", a->load.precision,
                  "fp32 (matches diffusers), bf16 (faster, half the memory; CPUs with AVX512_BF16 or AMX) or auto")
      ->capture_default_str();
  cli->add_option("--variant", a->load.variant, "Weights variant of a diffusers folder, e.g. fp16");
  add_weight_cache_option(*cli, a->load.weight_cache_dir);
  add_low_memory_option(*cli, a->load.low_memory);
  add_vae_option(*cli, a->load.vae_path);
  cli->add_option("--preview-every", gen.preview_every,
                  "Every N steps, write the latents so far, decoded by the TAESD, to <output>-preview.png")
      ->capture_default_str();
  cli->add_option("--preview-vae", a->load.preview_vae_path,
                  "TAESD for --preview-every only, when the model's VAE decodes the images");
  cli->add_option("--output,-o", a->output, "Output PNG (batches: name-2.png, name-3.png, ...)")->capture_default_str();
  cli->add_flag("--quiet,-q", a->quiet, "No progress output");
  return {cli, [a] { return run_generate(*a); }};
}

}  // namespace sdcpu::app
