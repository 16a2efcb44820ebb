// sdcpu: Stable Diffusion on CPUs. Subcommands (one file each, apps/cmd_*.cpp): generate, info, bench, serve, worker.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>
#include <vector>

#include "commands.h"
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

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"sdcpu: Stable Diffusion text-to-image on CPUs, matching diffusers"};
  app.require_subcommand(1);
  // A repeated option takes its last value, as most command-line tools do (handy in scripts).
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  app.set_version_flag("--version", std::string("sdcpu ") + sdcpu::kVersion);

  const std::vector<sdcpu::app::Command> commands = {
      sdcpu::app::add_generate_command(app), sdcpu::app::add_info_command(app), sdcpu::app::add_bench_command(app),
      sdcpu::app::add_serve_command(app), sdcpu::app::add_worker_command(app)};
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }

  try {
    for (const auto& command : commands)
      if (*command.cli) return command.run();
    return 2;  // unreachable: require_subcommand(1)
  } catch (const std::exception& e) {
    return report(e);
  }
}
