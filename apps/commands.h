// The sdcpu subcommands, one file each (cmd_<name>.cpp). Each registers its options on the CLI and returns
// the function sdcpu_main.cpp runs when that subcommand was chosen.
#pragma once
#include <CLI/CLI.hpp>
#include <functional>

namespace sdcpu::app {

struct Command {
  CLI::App* cli = nullptr;
  std::function<int()> run;  // returns the exit code; may throw (main maps the error to an exit code)
};

Command add_generate_command(CLI::App& app);
Command add_info_command(CLI::App& app);
Command add_bench_command(CLI::App& app);

}  // namespace sdcpu::app
