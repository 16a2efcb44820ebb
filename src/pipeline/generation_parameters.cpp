#include "pipeline/generation_parameters.h"

#include <cstdio>
#include <map>

#include "sdcpu/sdcpu.h"

namespace sdcpu {

std::string a1111_sampler_name(const std::string& sampler) {
  static const std::map<std::string, std::string> names = {
      {"pndm", "PLMS"},
      {"ddim", "DDIM"},
      {"euler", "Euler"},
      // A1111 < 1.9 had no "Euler Karras"; 1.9+ reads a " Karras" suffix as the Karras schedule type.
      {"euler_karras", "Euler Karras"},
      {"euler_a", "Euler a"},
      {"lms", "LMS"},
      {"heun", "Heun"},
      {"dpmpp_2m", "DPM++ 2M"},
      {"dpmpp_2m_karras", "DPM++ 2M Karras"},
      {"dpmpp_2m_sde", "DPM++ 2M SDE"},
      {"dpmpp_2m_sde_karras", "DPM++ 2M SDE Karras"},
      {"unipc", "UniPC"},
      {"lcm", "LCM"},
  };
  auto it = names.find(sampler);
  return it == names.end() ? sampler : it->second;
}

std::string format_a1111_parameters(const GenerationParameters& p) {
  std::string s = p.prompt;
  if (!p.negative_prompt.empty()) s += "\nNegative prompt: " + p.negative_prompt;
  char cfg[32];
  std::snprintf(cfg, sizeof cfg, "%g", p.cfg_scale);
  s += "\nSteps: " + std::to_string(p.steps) + ", Sampler: " + a1111_sampler_name(p.sampler) + ", CFG scale: " + cfg +
       ", Seed: " + std::to_string(p.seed) + ", Size: " + std::to_string(p.width) + "x" + std::to_string(p.height);
  if (!p.model.empty()) s += ", Model: " + p.model;
  if (!p.vae.empty()) s += ", VAE: " + p.vae;
  if (!p.timestep_spacing.empty()) s += ", Timestep spacing: " + p.timestep_spacing;
  if (p.clip_skip > 0) s += ", Clip skip: " + std::to_string(p.clip_skip + 1);  // A1111 counts the last layer as 1
  if (p.cache_interval > 1) {
    s += ", DeepCache interval: " + std::to_string(p.cache_interval) +
         ", DeepCache branch: " + std::to_string(p.cache_branch);
    if (p.cache_schedule != "uniform") {
      char power[32];
      std::snprintf(power, sizeof power, "%g", p.cache_power);
      s += ", DeepCache schedule: " + p.cache_schedule + " (center " +
           (p.cache_center < 0 ? std::string("middle") : std::to_string(p.cache_center)) + ", power " + power + ")";
    }
  }
  if (p.tome_ratio > 0) {
    char ratio[32];
    std::snprintf(ratio, sizeof ratio, "%g", p.tome_ratio);
    s += std::string(", Token merging ratio: ") + ratio;
  }
  s += std::string(", Version: sdcpu ") + kVersion;
  return s;
}

}  // namespace sdcpu
