// The "parameters" text AUTOMATIC1111's web UI writes into PNGs and reads back ("PNG Info"), so images
// made by sdcpu open with their settings in the tools people already use:
//
//   <prompt>
//   Negative prompt: <negative prompt>
//   Steps: 20, Sampler: DPM++ 2M, CFG scale: 7.5, Seed: 42, Size: 512x512, Model: v1-5, Version: sdcpu 0.1.0
//
// A timestep spacing the user chose (--timestep-spacing) is written as "Timestep spacing: trailing" after the
// model; AUTOMATIC1111 has no such key and shows it as it is. So is step caching ("DeepCache interval: 3, DeepCache
// branch: 0"). A TAESD given with --vae is written "VAE: <name>", as
// AUTOMATIC1111 writes a VAE the user chose.
#pragma once
#include <cstdint>
#include <string>

namespace sdcpu {

struct GenerationParameters {
  std::string prompt, negative_prompt, sampler, model;
  std::string timestep_spacing;  // written only when the user overrode the model's
  std::string vae;               // a VAE other than the model's (--vae), as A1111 writes "VAE: name"
  int steps = 0, width = 0, height = 0, clip_skip = 0;
  int cache_interval = 1, cache_branch = 0;  // step caching, written when on (interval > 1)
  std::string cache_schedule = "uniform";
  int cache_center = -1;
  double cache_power = 1.4;
  double tome_ratio = 0;                     // token merging, written when on, as A1111's "Token merging ratio"
  float cfg_scale = 0;
  uint64_t seed = 0;
};

// sdcpu's sampler name -> AUTOMATIC1111's display name ("euler_a" -> "Euler a").
std::string a1111_sampler_name(const std::string& sampler);
std::string format_a1111_parameters(const GenerationParameters& p);

}  // namespace sdcpu
