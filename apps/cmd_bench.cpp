// sdcpu bench: speed and memory, measured (README, "Benchmark"). The table goes to stdout, progress to
// stderr, the JSON report to --json.
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include "commands.h"
#include "sdcpu/sdcpu.h"

namespace sdcpu::app {
namespace {

struct BenchArgs {
  BenchOptions options;
  bool quality = false;
  std::string modes = "bf16";
  std::string reference = "fp32";
  int prompts = 8;
  std::string batch_sizes = "1";
  std::string json_path;
  bool quiet = false;
};

// "1,2,4" -> {1, 2, 4}; anything else is an InvalidArgument naming the option.
std::vector<int> parse_batch_sizes(const std::string& text) {
  std::vector<int> sizes;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t comma = std::min(text.find(',', start), text.size());
    const std::string item = text.substr(start, comma - start);
    size_t used = 0;
    int value = 0;
    try {
      value = std::stoi(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (item.empty() || used != item.size())
      throw InvalidArgument("batch sizes must be a comma-separated list of integers, got '" + text + "'");
    sizes.push_back(value);
    start = comma + 1;
  }
  return sizes;
}

// "bf16,fp32" -> {"bf16", "fp32"}; bench_quality() checks the names.
std::vector<std::string> split_commas(const std::string& text) {
  std::vector<std::string> items;
  std::stringstream s(text);
  for (std::string item; std::getline(s, item, ',');) items.push_back(item);
  return items;
}

// --quality: the same size, steps, sampler, guidance, threads and memory options, every mode against fp32.
QualityBenchOptions quality_options(const BenchArgs& a) {
  const BenchOptions& o = a.options;
  QualityBenchOptions q;
  q.model_path = o.model_path;
  q.prediction_type = o.prediction_type;
  q.width = o.width;
  q.height = o.height;
  q.steps = o.steps;
  q.sampler = o.sampler;
  q.cfg_scale = o.cfg_scale;
  q.modes = split_commas(a.modes);
  q.reference = a.reference;
  q.prompts = a.prompts;
  q.threads = o.threads;
  q.pin_threads = o.pin_threads;
  q.weight_cache_dir = o.weight_cache_dir;
  q.low_memory = o.low_memory;
  q.log = o.log;
  return q;
}

int run_bench(BenchArgs& a) {
  a.options.batch_sizes = parse_batch_sizes(a.batch_sizes);
  if (!a.quiet) a.options.log = [](const std::string& line) { std::fprintf(stderr, "%s\n", line.c_str()); };
  const BenchResult result = a.quality ? bench_quality(quality_options(a)) : bench(a.options);
  std::printf("%s", result.table.c_str());
  if (!a.json_path.empty()) {
    std::ofstream out(a.json_path, std::ios::binary | std::ios::trunc);
    if (!out || !(out << result.json) || !out.flush()) throw IoError("cannot write " + a.json_path);
    std::printf("wrote %s\n", a.json_path.c_str());
  }
  return 0;
}

}  // namespace

Command add_bench_command(CLI::App& app) {
  auto a = std::make_shared<BenchArgs>();
  BenchOptions& o = a->options;
  auto* cli = app.add_subcommand("bench", "Measure speed and memory; print a table and write JSON");
  cli->add_option("--model,-m", o.model_path, "Diffusers folder or single-file .safetensors checkpoint")->required();
  cli->add_option("--width,-W", o.width, "Image width, a multiple of 8")->capture_default_str();
  cli->add_option("--height,-H", o.height, "Image height, a multiple of 8")->capture_default_str();
  cli->add_option("--steps", o.steps, "Denoising steps")->capture_default_str();
  add_sampler_option(*cli, o.sampler, "Sampler (AUTOMATIC1111's name)");
  cli->add_option("--cfg-scale", o.cfg_scale, "Classifier-free guidance scale")->capture_default_str();
  add_step_cache_options(*cli, o.cache_interval, o.cache_branch, o.cache_schedule, o.cache_center, o.cache_power);
  add_token_merging_options(*cli, o.tome_ratio, o.tome_max_downsample);
  // Checked by bench() rather than by CLI11 so that bf16 on a CPU without it gets its own message.
  cli->add_option("--precision", o.precision, "fp32, bf16, int8 (the UNet's convolutions and linear layers in int8; AVX512-VNNI) or auto (bf16 where the CPU "
                  "has it)")->capture_default_str();
  cli->add_option("--batch-sizes", a->batch_sizes, "Images per UNet call to measure, e.g. 1,2,4,8")
      ->capture_default_str();
  cli->add_option("--runs", o.runs, "Timed runs per batch size, after a warm-up")->capture_default_str();
  cli->add_option("--threads", o.threads, "Compute threads (0: one per physical core)")->capture_default_str();
  cli->add_flag("--pin", o.pin_threads, "Bind compute thread i to core i");
  add_weight_cache_option(*cli, o.weight_cache_dir);
  add_memory_option(*cli, o.low_memory);
  add_vae_option(*cli, o.vae_path);
  cli->add_flag("--no-fp32-reference{false}", o.fp32_reference,
                "With bf16: skip the fp32 run that the PSNR against fp32 comes from (time, memory)");
  add_prediction_type_option(*cli, o.prediction_type);
  cli->add_flag("--quality", a->quality,
                "Quality against fp32 (or --reference) instead: a fixed set of prompts and seeds in fp32 and in each --modes, with "
                "time, PSNR, SSIM and latent error per mode");
  cli->add_option("--modes", a->modes,
                  "With --quality: the modes to test, comma-separated: fp32, bf16, int8 or auto, each optionally with "
                  "step caching +cacheN[+branchB][+quadratic] and token merging +tomeP (ratio P percent), e.g. "
                  "bf16,bf16+cache3,int8+cache3+tome50")
      ->capture_default_str();
  cli->add_option("--reference", a->reference,
                  "With --quality: the mode every other is compared with (fp32: exact; e.g. bf16 for what int8 or an "
                  "approximation costs on top of bf16)")
      ->capture_default_str();
  cli->add_option("--prompts", a->prompts, "With --quality: how many of the 16 fixed prompts (1..16)")
      ->capture_default_str();
  cli->add_option("--json", a->json_path, "Write the report as JSON to this file");
  cli->add_flag("--quiet,-q", a->quiet, "No progress output");
  return {cli, [a] { return run_bench(*a); }};
}

}  // namespace sdcpu::app
