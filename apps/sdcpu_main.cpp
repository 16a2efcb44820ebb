// sdcpu: Stable Diffusion on CPUs. Subcommands: generate, info.
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>

#include "progress_bar.h"
#include "sdcpu/sdcpu.h"

namespace {

// Exit codes: 0 success, 1 unexpected failure, 2 invalid arguments, 3 model problem, 4 I/O problem.
int report(const std::exception& e) {
  std::fprintf(stderr, "sdcpu: error: %s\n", e.what());
  if (dynamic_cast<const sdcpu::InvalidArgument*>(&e)) return 2;
  if (dynamic_cast<const sdcpu::ModelError*>(&e)) return 3;
  if (dynamic_cast<const sdcpu::IoError*>(&e)) return 4;
  return 1;
}

// out.png -> out-2.png for the k-th image of a batch (k from 1; the first keeps the name).
std::string numbered(const std::string& path, int k) {
  if (k == 0) return path;
  std::filesystem::path p(path);
  return (p.parent_path() / (p.stem().string() + "-" + std::to_string(k + 1) + p.extension().string())).string();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"sdcpu: Stable Diffusion text-to-image on CPUs, matching diffusers"};
  app.require_subcommand(1);
  // A repeated option takes its last value, as most command-line tools do (handy in scripts).
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  app.set_version_flag("--version", std::string("sdcpu ") + sdcpu::kVersion);

  std::string model;
  sdcpu::LoadOptions load;
  sdcpu::GenerateOptions gen;
  std::string output = "sdcpu.png";
  bool quiet = false;

  auto* generate = app.add_subcommand("generate", "Generate images from a prompt");
  generate->add_option("--model,-m", model, "Diffusers folder or single-file .safetensors checkpoint")->required();
  generate->add_option("--prompt,-p", gen.prompt, "What to draw")->required();
  generate->add_option("--negative-prompt,-n", gen.negative_prompt, "What to avoid");
  generate->add_option("--steps", gen.steps, "Denoising steps")->capture_default_str();
  generate->add_option("--cfg-scale", gen.cfg_scale, "Classifier-free guidance scale (<= 1: no guidance)")
      ->capture_default_str();
  generate->add_option("--sampler", gen.sampler, "Sampler")
      ->check(CLI::IsMember(sdcpu::sampler_names()))
      ->capture_default_str();
  generate->add_option("--seed", gen.seed, "Seed; image k of a batch uses seed + k")->capture_default_str();
  generate->add_option("--width,-W", gen.width, "Image width, a multiple of 8")->capture_default_str();
  generate->add_option("--height,-H", gen.height, "Image height, a multiple of 8")->capture_default_str();
  generate->add_option("--batch-count", gen.batch_count, "Images to generate, one after another")
      ->capture_default_str();
  generate->add_option("--clip-skip", gen.clip_skip, "Text encoder layers to skip from the end")->capture_default_str();
  generate->add_option("--threads", load.threads, "Compute threads (0: all cores)")->capture_default_str();
  generate->add_option("--variant", load.variant, "Weights variant of a diffusers folder, e.g. fp16");
  generate->add_option("--output,-o", output, "Output PNG (batches: name-2.png, name-3.png, ...)")
      ->capture_default_str();
  generate->add_flag("--quiet,-q", quiet, "No progress output");

  auto* info = app.add_subcommand("info", "Show what sdcpu detects in a model");
  info->add_option("--model,-m", model, "Diffusers folder or single-file .safetensors checkpoint")->required();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }

  try {
    if (*info) {
      auto pipe = sdcpu::Pipeline::load(model, load);
      std::printf("%s", pipe->describe().c_str());
      return 0;
    }
    const auto t0 = std::chrono::steady_clock::now();
    auto pipe = sdcpu::Pipeline::load(model, load);
    const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!quiet) std::fprintf(stderr, "loaded %s in %.2fs\n", model.c_str(), load_s);
    sdcpu::app::ProgressBar bar(!quiet);
    int current = 0;
    bar.restart();
    auto images = pipe->generate(gen, [&](int image, int step, int steps) {
      if (image != current) {
        current = image;
        bar.restart();
      }
      bar.update("image " + std::to_string(image + 1) + "/" + std::to_string(gen.batch_count), step, steps);
    });
    for (size_t k = 0; k < images.size(); ++k) {
      const std::string path = numbered(output, static_cast<int>(k));
      images[k].save_png(path);
      std::printf("%s (seed %llu)\n", path.c_str(), static_cast<unsigned long long>(images[k].seed));
    }
    return 0;
  } catch (const std::exception& e) {
    return report(e);
  }
}
