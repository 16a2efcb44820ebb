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
  CLI::App* cli = nullptr;  // to tell which options the user gave
};

// The model family's defaults (Pipeline::family()) for the options the user did not give: size, steps, guidance,
// sampler. Says on stderr what it took, unless quiet.
void apply_family_defaults(GenerateArgs& a, const ModelFamily& family) {
  auto given = [&](const char* option) { return a.cli->get_option(option)->count() > 0; };
  std::string taken;
  auto note = [&](const std::string& what) { taken += (taken.empty() ? "" : ", ") + what; };
  // Each side on its own, as diffusers' `height = height or sample_size * vae_scale_factor`.
  if (!given("--width")) {
    a.gen.width = family.width;
    note("width " + std::to_string(family.width));
  }
  if (!given("--height")) {
    a.gen.height = family.height;
    note("height " + std::to_string(family.height));
  }
  if (!given("--steps")) {
    a.gen.steps = family.steps;
    note(std::to_string(family.steps) + (family.steps == 1 ? " step" : " steps"));
  }
  if (!given("--cfg-scale")) {
    a.gen.cfg_scale = family.cfg_scale;
    char text[32];
    std::snprintf(text, sizeof text, "guidance %g", static_cast<double>(family.cfg_scale));
    note(text);
  }
  if (!given("--sampler")) {
    a.gen.sampler = family.sampler;
    note("sampler " + family.sampler);
  }
  if (!a.quiet && !taken.empty())
    std::fprintf(stderr, "family %s: %s\nusing the family's defaults: %s\n", family.name.c_str(), family.reason.c_str(),
                 taken.c_str());
}

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
  apply_family_defaults(a, pipe->family());
  validate(a.gen);
  if (!a.quiet && !a.gen.negative_prompt.empty() && (pipe->family().embedded_guidance || a.gen.cfg_scale <= 1.0f))
    std::fprintf(stderr, "the negative prompt is unused: %s\n",
                 pipe->family().embedded_guidance
                     ? "this UNet takes the guidance as an embedding (LCM), one pass per step"
                     : "guidance <= 1 runs the conditional pass only");
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
  a->cli = cli;
  cli->add_option("--model,-m", a->model, "Diffusers folder or single-file .safetensors checkpoint")->required();
  cli->add_option("--prompt,-p", gen.prompt, "What to draw")->required();
  cli->add_option("--negative-prompt,-n", gen.negative_prompt, "What to avoid");
  cli->add_option("--steps", gen.steps, "Denoising steps (default: the model family's, e.g. 20; sd-turbo 1, lcm 4)");
  cli->add_option("--cfg-scale", gen.cfg_scale,
                  "Guidance scale (<= 1: no unconditional pass; default: the model family's, e.g. 7.5; sd-turbo 0)");
  add_sampler_option(*cli, gen.sampler, "Sampler (AUTOMATIC1111's name; default: the model family's)");
  add_family_option(*cli, a->load.family);
  add_timestep_spacing_option(*cli, gen.timestep_spacing);
  cli->add_option("--seed", a->seed, "Seed (-1: random); image k of a batch uses seed + k")->capture_default_str();
  cli->add_option("--width,-W", gen.width, "Image width, a multiple of 8 (default: the model's, e.g. 512)");
  cli->add_option("--height,-H", gen.height, "Image height, a multiple of 8 (default: the model's, e.g. 512)");
  cli->add_option("--batch-count", gen.batch_count, "Images to generate, one after another")->capture_default_str();
  cli->add_option("--clip-skip", gen.clip_skip, "Text encoder layers to skip from the end")->capture_default_str();
  add_step_cache_options(*cli, gen.cache_interval, gen.cache_branch, gen.cache_schedule, gen.cache_center,
                         gen.cache_power);
  add_token_merging_options(*cli, gen.tome_ratio, gen.tome_max_downsample);
  cli->add_option("--threads", a->load.threads, "Compute threads (0: one per physical core)")->capture_default_str();
  cli->add_flag("--pin", a->load.pin_threads, "Bind compute thread i to core i");
  cli->add_option("--precision", a->load.precision,
                  "fp32 (matches diffusers), bf16 (faster, half the memory; CPUs with AVX512_BF16 or AMX), int8 (the UNet's "
                  "convolutions and linear layers in int8: faster, a quarter of the memory, a measured quality cost; "
                  "AVX512-VNNI) or auto (bf16 where the CPU has it)")
      ->capture_default_str();
  cli->add_option("--variant", a->load.variant, "Weights variant of a diffusers folder, e.g. fp16");
  add_weight_cache_option(*cli, a->load.weight_cache_dir);
  add_memory_option(*cli, a->load.low_memory);
  print_load_notices(a->load);
  add_vae_option(*cli, a->load.vae_path);
  add_prediction_type_option(*cli, a->load.prediction_type);
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
