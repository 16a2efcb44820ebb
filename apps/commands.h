// The sdcpu subcommands, one file each (cmd_<name>.cpp). Each registers its options on the CLI and returns
// the function sdcpu_main.cpp runs when that subcommand was chosen.
#pragma once
#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>

#include "sdcpu/sdcpu.h"

namespace sdcpu::app {

struct Command {
  CLI::App* cli = nullptr;
  std::function<int()> run;  // returns the exit code; may throw (main maps the error to an exit code)
};

// --weight-cache DIR and --no-weight-cache. `dir` arrives holding the default, LoadOptions' (README, "Weight cache
// and memory"): $SDCPU_WEIGHT_CACHE, else $XDG_CACHE_HOME/sdcpu/weights, else ~/.cache/sdcpu/weights.
inline void add_weight_cache_option(CLI::App& cli, std::string& dir) {
  auto* option = cli.add_option("--weight-cache", dir,
                                "Directory for prepacked weights: written on the first start, mapped on later ones "
                                "(default: $SDCPU_WEIGHT_CACHE, else $XDG_CACHE_HOME/sdcpu/weights, else "
                                "~/.cache/sdcpu/weights; empty: none)")
                     ->capture_default_str();
  cli.add_flag_callback(
         "--no-weight-cache", [&dir] { dir.clear(); },
         "No weight cache: convert the checkpoint's weights in memory at every start")
      ->excludes(option);
}

// --memory lean|fast (and --low-memory, the old name of lean). `low_memory` arrives holding the default (lean).
inline void add_memory_option(CLI::App& cli, bool& low_memory) {
  cli.add_option_function<std::string>(
         "--memory", [&low_memory](const std::string& mode) { low_memory = mode == "lean"; },
         "lean: one network's weights and activations in memory at a time, the lowest peak (bf16 512x512: about "
         "2 GB); fast: every network's weights stay in memory once used, for a little more speed when memory is "
         "plentiful")
      ->check(CLI::IsMember({"lean", "fast"}))
      ->default_str(low_memory ? "lean" : "fast");
  // Hidden: the switch from before lean became the default, kept for the scripts that use it.
  cli.add_flag_callback(
         "--low-memory", [&low_memory] { low_memory = true; }, "The same as --memory lean")
      ->group("");
}

// Prints what loading had to do otherwise than asked (a weight cache that cannot be written) on stderr.
inline void print_load_notices(LoadOptions& load) {
  load.on_notice = [](const std::string& notice) { std::fprintf(stderr, "sdcpu: %s\n", notice.c_str()); };
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

// --prediction-type: a single file's prediction type over its .yaml and diffusers' rule (README, "SD 2.x single
// files").
inline void add_prediction_type_option(CLI::App& cli, std::string& type) {
  cli.add_option("--prediction-type", type,
                 "epsilon or v_prediction: what a single-file checkpoint's UNet predicts, instead of what the .yaml "
                 "beside it says or diffusers' rule gives (SD 2.x 768 models: v_prediction)")
      ->check(CLI::IsMember({"epsilon", "v_prediction"}));
}

// --family: the model family whose defaults apply (README, "Model families"); empty: detected.
inline void add_family_option(CLI::App& cli, std::string& family) {
  std::string list;
  for (const std::string& f : model_family_names()) list += (list.empty() ? "" : ", ") + f;
  cli.add_option("--family", family, "Model family whose defaults apply, instead of the detected one: " + list)
      ->check(CLI::IsMember(model_family_names()));
}

// --timestep-spacing: overrides the model's scheduler config (README, "How the sampler's settings are chosen").
inline void add_timestep_spacing_option(CLI::App& cli, std::string& spacing) {
  cli.add_option("--timestep-spacing", spacing,
                 "leading, linspace or trailing instead of what the model's scheduler config gives the sampler")
      ->check(CLI::IsMember({"leading", "linspace", "trailing"}));
}

// --cache-interval N, --cache-branch B: step caching (README, "Step caching").
inline void add_step_cache_options(CLI::App& cli, int& interval, int& branch, std::string& schedule, int& center,
                                   double& power) {
  cli.add_option("--cache-interval", interval,
                 "Step caching (DeepCache): the UNet runs in full every N steps and only its shallow layers in "
                 "between (1: off; 3 to 5 is about 2-3x faster, at a quality cost bench --quality measures)")
      ->capture_default_str();
  cli.add_option("--cache-branch", branch,
                 "With --cache-interval: how deep the cached steps run (0: shallowest and fastest; up to 11 for SD "
                 "1.x, deeper is slower and closer to the uncached image)")
      ->capture_default_str();
  cli.add_option("--cache-schedule", schedule,
                 "With --cache-interval: which steps run in full: uniform (0, N, 2N, ...) or quadratic (DeepCache's "
                 "non-uniform schedule, densest around --cache-center)")
      ->check(CLI::IsMember({"uniform", "quadratic"}))
      ->capture_default_str();
  cli.add_option("--cache-center", center,
                 "With --cache-schedule quadratic: the step where full steps are densest (-1: the middle)")
      ->capture_default_str();
  cli.add_option("--cache-power", power, "With --cache-schedule quadratic: the spacing's power (> 1)")
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
