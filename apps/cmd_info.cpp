// sdcpu info: what was detected in a model, and the settings a sampler would run with.
#include <cstdio>
#include <memory>
#include <string>

#include "commands.h"
#include "sdcpu/sdcpu.h"

namespace sdcpu::app {

Command add_info_command(CLI::App& app) {
  auto model = std::make_shared<std::string>();
  auto load = std::make_shared<LoadOptions>();
  auto gen = std::make_shared<GenerateOptions>();
  auto* cli = app.add_subcommand("info", "Show what sdcpu detects in a model");
  cli->add_option("--model,-m", *model, "Diffusers folder or single-file .safetensors checkpoint")->required();
  cli->add_option("--precision", load->precision, "fp32, bf16, int8 or auto: the precision it would run in")
      ->capture_default_str();
  add_weight_cache_option(*cli, load->weight_cache_dir);
  print_load_notices(*load);
  add_vae_option(*cli, load->vae_path);
  add_prediction_type_option(*cli, load->prediction_type);
  add_family_option(*cli, load->family);
  add_sampler_option(*cli, gen->sampler, "The sampler whose scheduler settings to show (AUTOMATIC1111's name)");
  add_timestep_spacing_option(*cli, gen->timestep_spacing);
  return {cli, [cli, model, load, gen] {
            auto pipe = Pipeline::load(*model, *load);
            // The sampler generate would run: the family's unless --sampler names one.
            if (cli->get_option("--sampler")->count() == 0) gen->sampler = pipe->family().sampler;
            std::printf("%s%s", pipe->describe().c_str(), pipe->describe_scheduler(*gen).c_str());
            return 0;
          }};
}

}  // namespace sdcpu::app
