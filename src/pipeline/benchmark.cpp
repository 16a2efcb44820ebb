#include "pipeline/benchmark.h"

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <utility>

#include "core/error.h"
#include "core/threads.h"
#include "kernels/fma_peak.h"
#include "nets/vae.h"
#include "pipeline/cpu_usage.h"
#include "pipeline/image_quality.h"
#include "pipeline/precision.h"
#include "pipeline/txt2img.h"

namespace sdcpu {

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

std::string fixed(double v, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

namespace {

double max_abs_diff(const Tensor& a, const Tensor& b) {
  double m = 0;
  for (int64_t i = 0; i < a.numel(); ++i) m = std::max(m, static_cast<double>(std::fabs(a[i] - b[i])));
  return m;
}

Txt2ImgRequest make_request(const BenchOptions& o, int batch_size) {
  Txt2ImgRequest r;
  r.prompt = o.prompt;
  r.steps = o.steps;
  r.cfg_scale = o.cfg_scale;
  r.sampler = o.sampler;
  r.seed = o.seed;
  r.width = o.width;
  r.height = o.height;
  r.batch_size = batch_size;
  r.cache_interval = o.cache_interval;
  r.cache_branch = o.cache_branch;
  r.cache_schedule = o.cache_schedule;
  r.cache_center = o.cache_center;
  r.cache_power = o.cache_power;
  r.tome_ratio = o.tome_ratio;
  r.tome_max_downsample = o.tome_max_downsample;
  return r;
}

double peak_rss_mb() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;  // ru_maxrss is in KiB on Linux
}

// TAESD decoded: its time (median of `runs` after a warm-up) and how far the TAESD's image is from it.
TaesdComparison compare_with_full_vae(const ModelFiles& files, const Txt2ImgPipeline::Result& taesd_run, int runs) {
  const VaeDecoder vae(files.vae_config, *files.vae);
  Tensor scaled(taesd_run.latents.shape());
  for (int64_t j = 0; j < scaled.numel(); ++j) scaled[j] = taesd_run.latents[j] / files.vae_config.scaling_factor;
  Tensor image = vae.forward(scaled);
  std::vector<double> times;
  for (int run = 0; run < runs; ++run) {
    const auto t0 = std::chrono::steady_clock::now();
    image = vae.forward(scaled);
    times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  TaesdComparison c;
  c.full_vae_decode_s = median(times);
  c.psnr_db_vs_full_vae = image_psnr_db(taesd_run.image, image);
  return c;
}

}  // namespace

CpuInfo detect_cpu() {
  CpuInfo info;
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  std::set<std::string> flags;
  while (std::getline(in, line)) {
    const size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string key = line.substr(0, colon);
    key.erase(key.find_last_not_of(" \t") + 1);
    const std::string value = colon + 2 <= line.size() ? line.substr(colon + 2) : "";
    if (key == "model name" && info.model.empty()) info.model = value;
    if (key == "flags" && flags.empty()) {
      std::istringstream words(value);
      for (std::string f; words >> f;) flags.insert(f);
    }
  }
  if (info.model.empty()) info.model = "unknown";
  // The levels the kernels dispatch on (oneDNN: avx2, avx512_core, avx512_core_bf16, avx512_core_amx).
  if (flags.count("avx2") && flags.count("fma")) info.isa.push_back("avx2");
  if (flags.count("avx512f")) info.isa.push_back("avx512");
  if (flags.count("avx512_bf16")) info.isa.push_back("avx512_bf16");
  if (flags.count("amx_tile")) info.isa.push_back("amx");
  return info;
}

void validate(const BenchOptions& o) {
  resolve_precision(o.precision);
  if (o.runs < 1 || o.runs > 1000) throw InvalidArgument("runs must be between 1 and 1000");
  if (o.threads < 0) throw InvalidArgument("threads must be >= 0");
  if (o.batch_sizes.empty()) throw InvalidArgument("batch sizes must list at least one size");
  for (int b : o.batch_sizes) validate(make_request(o, b));  // sizes, steps, cfg, batch size
  const std::vector<std::string> samplers = sampler_names();
  if (std::find(samplers.begin(), samplers.end(), o.sampler) == samplers.end())
    throw InvalidArgument("unknown sampler '" + o.sampler + "'");
}

BenchReport run_benchmark(const BenchOptions& o) {
  validate(o);
  auto log = [&](const std::string& s) {
    if (o.log) o.log(s);
  };
  const int team = setup_threads(o.threads, o.pin_threads);
  BenchReport r;
  r.cpu = detect_cpu();
  r.threads = team;
  r.pinned = o.pin_threads;
  r.low_memory = o.low_memory;
  const ComputeType compute = resolve_precision(o.precision);
  r.precision = compute_type_name(compute);
  r.width = o.width;
  r.height = o.height;
  r.steps = o.steps;
  r.sampler = o.sampler;
  r.cfg_scale = o.cfg_scale;
  r.runs = o.runs;
  r.stage_batch_size = o.batch_sizes.front();

  // The peak before the model takes memory bandwidth and cache, and again after the timed runs: the best of both.
  // A shared machine can be slow for a few seconds at a time, and a peak taken in such a moment would overstate
  // the efficiency (one fp32 run here measured 311 GFLOP/s at its start, against 448 usually, and reported 114%).
  auto measure_peaks = [&] {
    r.machine_peak_gflops_fp32 =
        std::max(r.machine_peak_gflops_fp32, measure_fma_peak_gflops(PeakPrecision::kFp32, r.threads));
    r.machine_peak_gflops_bf16 =
        std::max(r.machine_peak_gflops_bf16, measure_fma_peak_gflops(PeakPrecision::kBf16, r.threads));
    r.machine_peak_gflops_int8 =
        std::max(r.machine_peak_gflops_int8, measure_fma_peak_gflops(PeakPrecision::kInt8, r.threads));
    r.machine_peak_gflops = compute == ComputeType::f32 ? r.machine_peak_gflops_fp32 : r.machine_peak_gflops_bf16;
  };
  measure_peaks();
  log("fma peak: fp32 " + fixed(r.machine_peak_gflops_fp32, 0) + " GFLOP/s, bf16 " +
      fixed(r.machine_peak_gflops_bf16, 0) + " GFLOP/s (" + std::to_string(r.threads) + " threads)");

  auto t0 = std::chrono::steady_clock::now();
  auto taesd = [&] { return o.vae_path.empty() ? TaesdOptions{} : TaesdOptions{open_taesd(o.vae_path), true}; };
  auto pipe = std::make_unique<Txt2ImgPipeline>(open_model(o.model_path, "", o.prediction_type), compute,
                                                MemoryOptions{o.weight_cache_dir, o.low_memory}, taesd());
  r.load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.weight_cache = pipe->weight_cache_status();
  r.int8_layers = pipe->int8_report().int8;
  r.int8_kept_layers = pipe->int8_report().kept;
  log("loaded in " + fixed(r.load_s, 2) + " s");
  for (const auto& c : r.weight_cache) log("weight cache: " + c.component + " " + c.outcome + ": " + c.path);

  Txt2ImgPipeline::Result stage_result;  // a run at the stage batch size, for the quality check
  for (size_t bi = 0; bi < o.batch_sizes.size(); ++bi) {
    const int batch = o.batch_sizes[bi];
    const Txt2ImgRequest request = make_request(o, batch);
    // A warm-up run first for every batch size: the first at a new shape creates its kernel primitives.
    auto warm = pipe->run(request);
    if (bi == 0) {
      r.first_image_s = warm.times.total_s;
      stage_result = std::move(warm);
    }
    log("batch " + std::to_string(batch) + " warm-up: " + fixed(warm.times.total_s, 2) + " s");
    std::vector<double> totals, encodes, steps, shallow_steps, decodes;
    const ActivationArena::Stats before = pipe->activation_stats();
    const MachineCpuTimes machine_before = machine_cpu_times();
    const double process_before = process_cpu_seconds();
    const auto wall_before = std::chrono::steady_clock::now();
    for (int run = 0; run < o.runs; ++run) {
      const StageTimes t = pipe->run(request).times;
      totals.push_back(t.total_s);
      encodes.push_back(t.text_encode_s);
      // With step caching, full and shallow UNet passes apart: the efficiency is the full passes'.
      const std::vector<bool> full =
          full_unet_passes(step_cache_schedule(request), static_cast<int>(t.denoise_step_s.size()));
      for (size_t i = 0; i < t.denoise_step_s.size(); ++i)
        (full[i] ? steps : shallow_steps).push_back(t.denoise_step_s[i]);
      decodes.push_back(t.vae_decode_s);
      log("batch " + std::to_string(batch) + " run " + std::to_string(run + 1) + "/" + std::to_string(o.runs) + ": " +
          fixed(t.total_s, 2) + " s (step " + fixed(median(t.denoise_step_s), 3) + " s, decode " +
          fixed(t.vae_decode_s, 2) + " s)");
    }
    const double process_cpu = process_cpu_seconds() - process_before;
    const MachineCpuTimes machine_after = machine_cpu_times();
    r.timed_runs_cpu.wall_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_before).count();
    r.timed_runs_cpu.process_cpu_s += process_cpu;
    r.timed_runs_cpu.others_cpu_s += std::max(0.0, machine_after.busy_s - machine_before.busy_s - process_cpu);
    r.timed_runs_cpu.steal_s += std::max(0.0, machine_after.steal_s - machine_before.steal_s);
    r.timed_runs_cpu.cpus = online_cpus();
    const ActivationArena::Stats after = pipe->activation_stats();
    r.timed_run_buffers.planned += after.planned - before.planned;
    r.timed_run_buffers.recorded += after.recorded - before.recorded;
    r.timed_run_buffers.unplanned += after.unplanned - before.unplanned;
    r.timed_run_buffers.heap += after.heap - before.heap;
    r.images_per_min[batch] = 60.0 * batch / median(totals);
    if (bi == 0) {
      r.text_encode_s = median(encodes);
      r.unet_step_s = median(steps);
      r.unet_shallow_step_s = median(shallow_steps);
      r.unet_full_passes = static_cast<int>(steps.size()) / o.runs;
      r.unet_shallow_passes = static_cast<int>(shallow_steps.size()) / o.runs;
      r.vae_decode_s = median(decodes);
      r.total_s = median(totals) / batch;
    }
  }

  measure_peaks();

  const ModelFiles& files = pipe->files();
  const int64_t factor = int64_t{1} << (files.vae_config.block_out_channels.size() - 1);
  const int64_t unet_batch = (o.cfg_scale > 1.0f ? 2 : 1) * int64_t{r.stage_batch_size};
  r.unet_flops = count_unet_flops(files.unet_config, unet_batch, o.height / factor, o.width / factor,
                                  files.text_encoder_config.max_position_embeddings);
  r.unet_gflops_achieved = r.unet_step_s > 0 ? r.unet_flops.total() / 1e9 / r.unet_step_s : 0;
  if (o.cache_interval > 1)
    r.unet_shallow_flops = count_unet_flops(files.unet_config, unet_batch, o.height / factor, o.width / factor,
                                            files.text_encoder_config.max_position_embeddings, o.cache_branch);
  r.unet_efficiency = r.machine_peak_gflops > 0 ? r.unet_gflops_achieved / r.machine_peak_gflops : 0;
  const int64_t latent_h = o.height / factor, latent_w = o.width / factor;
  const double full_vae_flops = count_vae_decoder_flops(files.vae_config, r.stage_batch_size, latent_h, latent_w);
  r.vae_decode_flops = full_vae_flops;
  if (const TaesdFiles* t = pipe->taesd()) {
    r.decoder = "taesd";
    r.vae_decode_flops = count_taesd_decoder_flops(t->config, r.stage_batch_size, latent_h, latent_w);
  }
  r.vae_gflops_achieved = r.vae_decode_s > 0 ? r.vae_decode_flops / 1e9 / r.vae_decode_s : 0;
  r.vae_efficiency = r.machine_peak_gflops > 0 ? r.vae_gflops_achieved / r.machine_peak_gflops : 0;
  r.cache_interval = o.cache_interval;
  r.cache_branch = o.cache_branch;
  r.tome_ratio = o.tome_ratio;
  const double images = r.stage_batch_size;
  const int64_t prompts = o.cfg_scale > 1.0f ? 2 : 1;
  r.text_encoder_flops = count_clip_text_flops(files.text_encoder_config, prompts);
  if (files.text_encoder_2)  // SDXL's second encoder (OpenCLIP ViT-bigG with projection) runs on the same prompts
    r.text_encoder_flops += count_clip_text_flops(files.text_encoder_2_config, prompts);
  r.unet_flops_per_image =
      (r.unet_full_passes * r.unet_flops.total() + r.unet_shallow_passes * r.unet_shallow_flops.total()) / images;
  r.image_flops = r.text_encoder_flops + r.unet_flops_per_image + r.vae_decode_flops / images;
  r.image_flop_bound_s = r.machine_peak_gflops > 0 ? r.image_flops / 1e9 / r.machine_peak_gflops : 0;
  r.peak_rss_mb = peak_rss_mb();  // before the fp32 reference below adds its own weights
  r.activations = pipe->activation_stats();
  if (pipe->taesd()) {
    log("taesd: decoding the same latents with the model's full VAE");
    r.taesd = compare_with_full_vae(files, stage_result, o.runs);
    r.taesd->path = pipe->taesd()->path;
    r.taesd->full_vae_decode_flops = full_vae_flops;
  }

  if (compute != ComputeType::f32 && o.fp32_reference) {
    // Quality: the same request (prompt, seed, size, batch) in fp32, from a fresh fp32 pipeline, after this one is
    // gone so that both never hold their weights at once.
    pipe.reset();
    log("quality: running the fp32 reference");
    const Txt2ImgPipeline reference(open_model(o.model_path, "", o.prediction_type), ComputeType::f32, {}, taesd());
    const auto ref = reference.run(make_request(o, r.stage_batch_size));
    r.psnr_db_vs_fp32 = image_psnr_db(stage_result.image, ref.image);
    r.max_abs_latent_diff_vs_fp32 = max_abs_diff(stage_result.latents, ref.latents);
    r.has_quality = true;
  }
  return r;
}

std::string to_json(const BenchReport& r) {
  nlohmann::ordered_json j;
  j["cpu"] = {{"model", r.cpu.model}, {"isa", r.cpu.isa}};
  j["threads"] = r.threads;
  j["pinned"] = r.pinned;
  j["low_memory"] = r.low_memory;
  j["precision"] = r.precision;
  j["width"] = r.width;
  j["height"] = r.height;
  j["steps"] = r.steps;
  j["sampler"] = r.sampler;
  j["cfg_scale"] = r.cfg_scale;
  j["runs"] = r.runs;
  j["stage_batch_size"] = r.stage_batch_size;
  j["load_s"] = r.load_s;
  // null without a cache directory; else per network what the load did with its file.
  j["weight_cache"] = nullptr;
  if (!r.weight_cache.empty()) {
    j["weight_cache"] = nlohmann::ordered_json::object();
    for (const auto& c : r.weight_cache)
      j["weight_cache"][c.component] = {{"outcome", c.outcome}, {"previous_state", c.previous_state}, {"path", c.path}};
  }
  j["first_image_s"] = r.first_image_s;
  j["text_encode_s"] = r.text_encode_s;
  j["unet_step_s"] = r.unet_step_s;
  j["vae_decode_s"] = r.vae_decode_s;
  j["total_s"] = r.total_s;
  nlohmann::ordered_json per_batch = nlohmann::ordered_json::object();
  for (const auto& [batch, ipm] : r.images_per_min) per_batch[std::to_string(batch)] = ipm;
  j["images_per_min"] = per_batch;
  j["peak_rss_mb"] = r.peak_rss_mb;
  const BenchReport::CpuUse& cpu = r.timed_runs_cpu;
  j["timed_runs_cpu"] = {{"wall_s", cpu.wall_s},
                         {"cpus", cpu.cpus},
                         {"process_cpu_s", cpu.process_cpu_s},
                         {"others_cpu_s", cpu.others_cpu_s},
                         {"steal_s", cpu.steal_s}};
  // The arena's pages in memory (with --low-memory, the running network's weights too) and its plans; per source,
  // the buffers the timed runs took: all "planned" when the steps allocate nothing afresh.
  j["activation_arena_mb"] = static_cast<double>(r.activations.touched_bytes) / (1 << 20);
  j["activation_plans"] = nlohmann::ordered_json::array();
  for (const auto& p : r.activations.plans)
    j["activation_plans"].push_back(
        {{"key", p.key}, {"mb", static_cast<double>(p.bytes) / (1 << 20)}, {"buffers", p.buffers}});
  j["timed_run_buffers"] = {{"planned", r.timed_run_buffers.planned},
                            {"recorded", r.timed_run_buffers.recorded},
                            {"unplanned", r.timed_run_buffers.unplanned},
                            {"heap", r.timed_run_buffers.heap}};
  j["unet_gflop_per_step"] = r.unet_flops.total() / 1e9;
  j["unet_gflop_breakdown"] = {{"conv3x3", r.unet_flops.conv3x3 / 1e9},
                               {"conv1x1", r.unet_flops.conv1x1 / 1e9},
                               {"linear", r.unet_flops.linear / 1e9},
                               {"attention", r.unet_flops.attention / 1e9}};
  j["unet_gflops_achieved"] = r.unet_gflops_achieved;
  j["machine_peak_gflops"] = r.machine_peak_gflops;
  j["machine_peak_gflops_by_precision"] = {
      {"fp32", r.machine_peak_gflops_fp32}, {"bf16", r.machine_peak_gflops_bf16}, {"int8", r.machine_peak_gflops_int8}};
  if (r.precision == "int8") {
    j["int8_layers"] = r.int8_layers;
    j["int8_kept_layers"] = r.int8_kept_layers;
  }
  j["unet_efficiency"] = r.unet_efficiency;
  j["cache_interval"] = r.cache_interval;
  j["cache_branch"] = r.cache_branch;
  j["tome_ratio"] = r.tome_ratio;
  j["unet_full_passes"] = r.unet_full_passes;
  j["unet_shallow_passes"] = r.unet_shallow_passes;
  j["unet_shallow_step_s"] = r.unet_shallow_step_s;
  j["unet_shallow_gflop_per_step"] = r.unet_shallow_flops.total() / 1e9;
  j["text_encoder_gflop"] = r.text_encoder_flops / 1e9;
  j["unet_gflop_per_image"] = r.unet_flops_per_image / 1e9;
  j["image_gflop"] = r.image_flops / 1e9;
  j["image_flop_bound_s"] = r.image_flop_bound_s;
  j["total_vs_flop_bound"] = r.image_flop_bound_s > 0 ? r.total_s / r.image_flop_bound_s : 0;
  j["decoder"] = r.decoder;
  j["vae_gflop_per_decode"] = r.vae_decode_flops / 1e9;
  j["vae_gflops_achieved"] = r.vae_gflops_achieved;
  j["vae_efficiency"] = r.vae_efficiency;
  j["taesd"] = nullptr;
  if (r.taesd) {
    const TaesdComparison& t = *r.taesd;
    j["taesd"] = {
        {"path", t.path},
        {"full_vae_decode_s", t.full_vae_decode_s},
        {"full_vae_gflop_per_decode", t.full_vae_decode_flops / 1e9},
        {"decode_time_vs_full_vae", t.full_vae_decode_s > 0 ? r.vae_decode_s / t.full_vae_decode_s : 0},
        {"psnr_db_vs_full_vae", std::isfinite(t.psnr_db_vs_full_vae) ? nlohmann::ordered_json(t.psnr_db_vs_full_vae)
                                                                     : nlohmann::ordered_json(nullptr)}};
  }
  // Quality against fp32 exists only for the lower precisions; an identical image has an infinite PSNR, which
  // JSON cannot hold: it is written as null there too, with the latent difference 0 telling the two apart.
  j["psnr_db_vs_fp32"] = nullptr;
  j["max_abs_latent_diff_vs_fp32"] = nullptr;
  if (r.has_quality) {
    if (std::isfinite(r.psnr_db_vs_fp32)) j["psnr_db_vs_fp32"] = r.psnr_db_vs_fp32;
    j["max_abs_latent_diff_vs_fp32"] = r.max_abs_latent_diff_vs_fp32;
  }
  return j.dump(2) + "\n";
}

std::string format_table(const BenchReport& r) {
  std::ostringstream s;
  auto row = [&](const std::string& name, const std::string& value) {
    s << "  " << name << std::string(name.size() < 24 ? 24 - name.size() : 1, ' ') << value << "\n";
  };
  std::string isa;
  for (const auto& f : r.cpu.isa) isa += (isa.empty() ? "" : " ") + f;
  s << "sdcpu bench: " << r.width << "x" << r.height << ", " << r.steps << " steps, " << r.sampler << ", cfg "
    << fixed(r.cfg_scale, 1) << ", " << r.precision << ", " << r.threads << (r.pinned ? " pinned" : "") << " threads"
    << (r.low_memory ? ", low memory" : "") << ", median of " << r.runs << " runs\n";
  row("cpu", r.cpu.model + " (" + isa + ")");
  row("load", fixed(r.load_s, 2) + " s");
  for (const auto& c : r.weight_cache) row("weight cache, " + c.component, c.outcome);
  row("first image (cold)", fixed(r.first_image_s, 2) + " s" +
                                (r.stage_batch_size > 1 ? " (batch " + std::to_string(r.stage_batch_size) + ")" : ""));
  row("text encode", fixed(r.text_encode_s, 3) + " s");
  row("unet step", fixed(r.unet_step_s, 3) + " s  (" + fixed(r.unet_flops.total() / 1e9, 1) + " GFLOP, " +
                       fixed(r.unet_gflops_achieved, 1) + " GFLOP/s)");
  row(r.taesd ? "taesd decode" : "vae decode", fixed(r.vae_decode_s, 3) + " s  (" + fixed(r.vae_decode_flops / 1e9, 1) +
                                                   " GFLOP, " + fixed(r.vae_gflops_achieved, 1) + " GFLOP/s, " +
                                                   fixed(100.0 * r.vae_efficiency, 1) + " % of peak)");
  if (r.taesd) {
    const TaesdComparison& t = *r.taesd;
    row("full vae decode", fixed(t.full_vae_decode_s, 3) + " s  (" + fixed(t.full_vae_decode_flops / 1e9, 1) +
                               " GFLOP; taesd takes " +
                               fixed(100.0 * r.vae_decode_s / std::max(t.full_vae_decode_s, 1e-12), 1) + " % of it)");
    row("taesd psnr vs vae", fixed(t.psnr_db_vs_full_vae, 2) + " dB (image, same latents)");
  }
  if (r.cache_interval > 1)
    row("unet shallow step", fixed(r.unet_shallow_step_s, 3) + " s  (" + fixed(r.unet_shallow_flops.total() / 1e9, 1) +
                                 " GFLOP; cache interval " + std::to_string(r.cache_interval) + ", branch " +
                                 std::to_string(r.cache_branch) + ": " + std::to_string(r.unet_full_passes) +
                                 " full + " + std::to_string(r.unet_shallow_passes) + " shallow passes)");
  if (r.tome_ratio > 0)
    row("token merging", "ratio " + fixed(r.tome_ratio, 2) + "  (the GFLOP figures are the unmerged UNet's)");
  row("total per image", fixed(r.total_s, 2) + " s  (" + fixed(r.image_flops / 1e9, 0) +
                             " GFLOP: " + fixed(r.image_flop_bound_s, 2) + " s at peak, measured " +
                             fixed(r.total_s / std::max(r.image_flop_bound_s, 1e-12), 2) + "x that)");
  for (const auto& [batch, ipm] : r.images_per_min) row("images/min, batch " + std::to_string(batch), fixed(ipm, 2));
  row("peak rss", fixed(r.peak_rss_mb, 0) + " MB");
  const ActivationArena::Stats& t = r.timed_run_buffers;
  row("activation arena", fixed(static_cast<double>(r.activations.touched_bytes) / (1 << 20), 0) + " MB, " +
                              std::to_string(r.activations.plans.size()) +
                              " plans; timed runs: " + std::to_string(t.planned) + " buffers planned, " +
                              std::to_string(t.recorded + t.unplanned + t.heap) + " not");
  const BenchReport::CpuUse& cpu = r.timed_runs_cpu;
  const double wall = std::max(cpu.wall_s, 1e-12);
  row("cpus during runs", "this process " + fixed(cpu.process_cpu_s / wall, 2) + ", other processes " +
                              fixed(cpu.others_cpu_s / wall, 2) + ", steal " + fixed(cpu.steal_s / wall, 2) + " (of " +
                              std::to_string(cpu.cpus) + ")");
  if (r.precision == "int8") {
    row("machine peak", fixed(r.machine_peak_gflops, 1) + " GFLOP/s bf16 (int8 vpdpbusd " +
                            fixed(r.machine_peak_gflops_int8, 1) + " GOP/s)");
    std::string kept;
    for (const std::string& name : r.int8_kept_layers) kept += (kept.empty() ? "" : ", ") + name;
    row("int8 layers", std::to_string(r.int8_layers.size()) + " of " +
                           std::to_string(r.int8_layers.size() + r.int8_kept_layers.size()) +
                           " UNet layers; bf16: " + kept + " and the attention products");
  } else {
    row("machine peak", fixed(r.machine_peak_gflops, 1) + " GFLOP/s " + r.precision);
  }
  row("unet efficiency", fixed(100.0 * r.unet_efficiency, 1) + " % of peak");
  if (r.has_quality) {
    row("psnr vs fp32", fixed(r.psnr_db_vs_fp32, 2) + " dB (image)");
    row("latents vs fp32", "max abs diff " + fixed(r.max_abs_latent_diff_vs_fp32, 5));
  }
  return s.str();
}

BenchResult bench(const BenchOptions& options) {
  const BenchReport report = run_benchmark(options);
  return {format_table(report), to_json(report)};
}

}  // namespace sdcpu
