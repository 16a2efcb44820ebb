// `sdcpu bench`: the one way speed and memory are measured in this project. Loads a model, generates
// images, and reports the stage timings the pipeline measures itself (Txt2ImgPipeline's StageTimes),
// throughput against batch size, peak memory, and the UNet's efficiency: its FLOPs per step (counted
// analytically from the configuration) over its measured time, against the machine's measured FMA peak.
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/activation_arena.h"
#include "formats/model_config.h"
#include "pipeline/flop_count.h"
#include "pipeline/weight_cache.h"
#include "sdcpu/sdcpu.h"  // BenchOptions

namespace sdcpu {

// Throws InvalidArgument naming the first bad option (before loading anything).
void validate(const BenchOptions& options);

// How the benchmarks (bench, bench --quality) summarize and print their figures: the median of the runs (0 for
// none), and a number with `decimals` decimals ("inf" for infinity).
double median(std::vector<double> values);
std::string fixed(double v, int decimals);

struct CpuInfo {
  std::string model;             // "model name" from /proc/cpuinfo
  std::vector<std::string> isa;  // of avx2, avx512, avx512_bf16, amx, in that order
};
CpuInfo detect_cpu();

// With --vae: the TAESD that decoded, and the model's full VAE decoder on the same final latents.
struct TaesdComparison {
  std::string path;
  double full_vae_decode_s = 0;  // median of `runs` decodes after a warm-up, outside the pipeline's arena
  double full_vae_decode_flops = 0;
  double psnr_db_vs_full_vae = 0;  // the TAESD image against the full VAE's (as psnr_db_vs_fp32)
};

struct BenchReport {
  CpuInfo cpu;
  int threads = 0;
  bool pinned = false;
  bool low_memory = false;
  std::string precision;  // the precision that ran (auto resolved)
  int width = 0, height = 0, steps = 0;
  std::string sampler;
  float cfg_scale = 0;
  int runs = 0;
  int stage_batch_size = 1;  // the batch size the per-stage figures below come from (the first listed)
  double load_s = 0;         // open + build every network
  std::vector<WeightCacheStatus> weight_cache;  // one per network when a weight cache directory was given
  double first_image_s = 0;                     // the first generate (cold), at stage_batch_size
  double text_encode_s = 0;                     // medians over the warm runs
  double unet_step_s = 0;  // per denoising step: UNet on the guidance batch + guidance mix + scheduler step
  double vae_decode_s = 0;
  double total_s = 0;                    // per image, warm
  std::map<int, double> images_per_min;  // per batch size, warm
  double peak_rss_mb = 0;                // getrusage ru_maxrss, the whole process
  // CPU time over all the timed runs (pipeline/cpu_usage.h), to tell a slow machine from a slow kernel: this
  // process's, the other processes' (the machine's busy time less this process's) and the hypervisor's steal, in
  // CPU seconds, against the runs' wall time and the machine's CPUs.
  struct CpuUse {
    double wall_s = 0, process_cpu_s = 0, others_cpu_s = 0, steal_s = 0;
    int cpus = 1;
  } timed_runs_cpu;
  // The activation arena (core/activation_arena.h) after the timed runs: the memory it holds and its plans, and
  // where the buffers of the timed runs alone came from (planned offsets only, when nothing is allocated afresh).
  ActivationArena::Stats activations;
  ActivationArena::Stats timed_run_buffers;
  UNetFlops unet_flops;                 // per step, guidance batch included
  double unet_gflops_achieved = 0;      // unet_flops.total() / unet_step_s
  double machine_peak_gflops = 0;       // FMA microbenchmark in the precision used
  double machine_peak_gflops_fp32 = 0;  // both, for reference
  double machine_peak_gflops_bf16 = 0;  // 0 when the CPU lacks AVX512_BF16
  double machine_peak_gflops_int8 = 0;  // vpdpbusd, 0 when the CPU lacks AVX512-VNNI
  // int8: the UNet layers that compute in int8 and those its policy keeps in bf16 (pipeline/int8_policy.h). In
  // int8 the efficiency above is against the bf16 peak: int8 products can run up to twice as fast as it.
  std::vector<std::string> int8_layers, int8_kept_layers;
  double unet_efficiency = 0;           // achieved / peak
  // Step caching (--cache-interval > 1): unet_step_s, unet_flops and the efficiency above are the full passes';
  // these are the shallow passes', and how many of each one image's loop ran.
  int cache_interval = 1, cache_branch = 0;
  // Token merging's ratio (0: off). The FLOP counts and efficiencies are the unmerged UNet's: with merging the UNet
  // does fewer operations than counted, so its "efficiency" is its speed relative to the plain UNet's work.
  double tome_ratio = 0;
  double unet_shallow_step_s = 0;
  UNetFlops unet_shallow_flops;
  int unet_full_passes = 0, unet_shallow_passes = 0;
  // The whole image's work at stage_batch_size, per image: text encoder, every UNet pass of the loop, decoder;
  // and the time it would take at the machine's peak, the bound the measured total_s is held against.
  double text_encoder_flops = 0;
  double unet_flops_per_image = 0;
  double image_flops = 0;
  double image_flop_bound_s = 0;
  // The image decoder that ran: "vae" (the model's), or "taesd" (--vae), whose figures vae_decode_s and the two
  // below then are; taesd.has_value() then.
  std::string decoder = "vae";
  std::optional<TaesdComparison> taesd;
  double vae_decode_flops = 0;     // one decode at stage_batch_size
  double vae_gflops_achieved = 0;  // vae_decode_flops / vae_decode_s
  double vae_efficiency = 0;       // achieved / peak
  // Below fp32 only: the stage batch's image and final latents against an fp32 run of the same request.
  bool has_quality = false;
  double psnr_db_vs_fp32 = 0;  // of the decoded image, clamped to [-1, 1] and taken as [0, 1] (peak 1)
  double max_abs_latent_diff_vs_fp32 = 0;
};

BenchReport run_benchmark(const BenchOptions& options);
std::string to_json(const BenchReport& report);  // pretty-printed, stable key names (see README)
std::string format_table(const BenchReport& report);

}  // namespace sdcpu
