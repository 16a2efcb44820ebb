// sdcpu info: what was detected in a model.
#include <cstdio>
#include <memory>
#include <string>

#include "commands.h"
#include "sdcpu/sdcpu.h"

namespace sdcpu::app {

Command add_info_command(CLI::App& app) {
  auto model = std::make_shared<std::string>();
  auto* cli = app.add_subcommand("info", "Show what sdcpu detects in a model");
  cli->add_option("--model,-m", *model, "Diffusers folder or single-file .safetensors checkpoint")->required();
  return {cli, [model] {
            auto pipe = Pipeline::load(*model);
            std::printf("%s", pipe->describe().c_str());
            return 0;
          }};
}

}  // namespace sdcpu::app
