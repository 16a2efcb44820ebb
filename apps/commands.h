// The sdcpu subcommands, one file each (cmd_<name>.cpp). Each registers its options on the CLI and returns
// the function sdcpu_main.cpp runs when that subcommand was chosen.
#pragma once
#include <CLI/CLI.hpp>
#include <cstdlib>
#include <functional>
#include <string>

#include "sdcpu/sdcpu.h"

namespace sdcpu::app {

struct Command {
  CLI::App* cli = nullptr;
  std::function<int()> run;  // returns the exit code; may throw (main maps the error to an exit code)
};

// --weight-cache DIR, by default $SDCPU_WEIGHT_CACHE (README, "Weight cache and memory").
inline void add_weight_cache_option(CLI::App& cli, std::string& dir) {
  if (const char* env = std::getenv("SDCPU_WEIGHT_CACHE")) dir = env;
  cli.add_option("--weight-cache", dir,
                 "Directory for prepacked weights: written on the first start, mapped on later ones "
                 "(default: $SDCPU_WEIGHT_CACHE; empty: none)")
      ->capture_default_str();
}

inline void add_low_memory_option(CLI::App& cli, bool& low_memory) {
  cli.add_flag("--low-memory", low_memory,
               "One network's weights and activations in memory at a time (with --weight-cache: weights read in "
               "per stage); a lower peak");
}

// --sampler: one of sampler_names(); the help lists each with the AUTOMATIC1111 name it stands for.
inline void add_sampler_option(CLI::App& cli, std::string& sampler, const std::string& description) {
  std::string list;
  for (const std::string& s : sampler_names())
    list += (list.empty() ? "" : ", ") + s + " (" + a1111_sampler_name(s) + ")";
  cli.add_option("--sampler", sampler, description + ": " + list)
      ->check(CLI::IsMember(sampler_names()))
      ->capture_default_str();
}

// --vae PATH: a TAESD that decodes the images instead of the model's VAE (README, "TAESD").
inline void add_vae_option(CLI::App& cli, std::string& path) {
  cli.add_option("--vae", path,
                 "TAESD (AutoencoderTiny folder, e.g. madebyollin/taesd, or taesd_decoder.safetensors) to decode "
                 "with instead of the model's VAE: much faster, slightly softer");
}

// --timestep-spacing: overrides the model's scheduler config (README, "How the sampler's settings are chosen").
inline void add_timestep_spacing_option(CLI::App& cli, std::string& spacing) {
  cli.add_option("--timestep-spacing", spacing,
                 "leading, linspace or trailing instead of what the model's scheduler config gives the sampler")
      ->check(CLI::IsMember({"leading", "linspace", "trailing"}));
}

// --cache-interval N, --cache-branch B: step caching (README, "Step caching").
inline void add_step_cache_options(CLI::App& cli, int& interval, int& branch) {
  cli.add_option("--cache-interval", interval,
                 "Step caching (DeepCache): the UNet runs in full every N steps and only its shallow layers in "
                 "between (1: off; 3 to 5 is about 2-3x faster, at a quality cost bench --quality measures)")
      ->capture_default_str();
  cli.add_option("--cache-branch", branch,
                 "With --cache-interval: how deep the cached steps run (0: shallowest and fastest; up to 11 for SD "
                 "1.x, deeper is slower and closer to the uncached image)")
      ->capture_default_str();
}

// --tome-ratio R, --tome-max-downsample D: token merging (README, "Token merging").
inline void add_token_merging_options(CLI::App& cli, double& ratio, int& max_downsample) {
  cli.add_option("--tome-ratio", ratio,
                 "Token merging (ToMe): the fraction of tokens the first UNet level's self-attention merges away "
                 "(0: off; tomesd suggests at most 0.5)")
      ->check(CLI::Range(0.0, 0.99))
      ->capture_default_str();
  cli.add_option("--tome-max-downsample", max_downsample,
                 "With --tome-ratio: merge in UNet levels downsampled at most this many times (1, 2, 4 or 8)")
      ->check(CLI::IsMember({1, 2, 4, 8}))
      ->capture_default_str();
}

Command add_generate_command(CLI::App& app);
Command add_info_command(CLI::App& app);
Command add_bench_command(CLI::App& app);
Command add_serve_command(CLI::App& app);
Command add_worker_command(CLI::App& app);

}  // namespace sdcpu::app
