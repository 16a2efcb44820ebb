// `sdcpu bench --quality` (include/sdcpu/sdcpu.h, QualityBenchOptions): every mode against the fp32 reference on
// a fixed set of prompts and seeds, so that speed and quality are always reported side by side.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "core/threads.h"
#include "pipeline/benchmark.h"
#include "pipeline/image_quality.h"
#include "pipeline/precision.h"
#include "pipeline/txt2img.h"
#include "sdcpu/sdcpu.h"

namespace sdcpu {
namespace {

// Prompts of the kinds people generate (photos, paintings, portraits, text-free scenes, abstract), each with its
// seed. Fixed forever: figures from different runs and machines compare because the set never changes.
struct QualityPrompt {
  const char* prompt;
  const char* negative_prompt;
  uint64_t seed;
};
constexpr QualityPrompt kPrompts[] = {
    {"a photo of an astronaut riding a horse on mars", "", 1001},
    {"a lighthouse on a cliff at dusk, oil painting, dramatic sky", "blurry, low quality", 1002},
    {"portrait of an old fisherman, detailed wrinkles, natural light, 85mm photo", "cartoon, drawing", 1003},
    {"a bowl of ramen on a wooden table, food photography", "", 1004},
    {"isometric voxel city at night, neon lights", "blurry", 1005},
    {"a watercolor painting of a fox in a snowy forest", "", 1006},
    {"macro photo of a dragonfly on a leaf with dew drops", "out of focus", 1007},
    {"abstract geometric shapes in bauhaus style, red yellow blue", "", 1008},
    {"a cozy living room with a fireplace, interior design magazine", "people", 1009},
    {"an ancient temple in the jungle covered by vines, morning fog", "", 1010},
    {"a cat wearing a tiny wizard hat, studio photo", "lowres", 1011},
    {"mountain lake reflecting snowy peaks, sunrise, landscape photo", "", 1012},
    {"a steampunk airship above victorian london", "blurry, watermark", 1013},
    {"pencil sketch of a running horse", "", 1014},
    {"a futuristic sports car in a desert, cinematic lighting", "low quality", 1015},
    {"still life of apples and a glass bottle, dutch golden age painting", "", 1016},
};
constexpr int kPromptCount = static_cast<int>(sizeof kPrompts / sizeof kPrompts[0]);

// A mode under test, as named on the command line: a precision, then the approximations it adds, each "+name":
// "bf16", "int8", "bf16+cache3" (step caching every 3 steps, branch 0), "fp32+cache5+branch2", "bf16+cache3+quadratic"
// (the non-uniform schedule, centered, power 1.4), "bf16+tome50" (token merging, ratio 0.5), and combinations such
// as "int8+cache3+tome50", each judged by the same reference.
struct QualityMode {
  std::string name;
  ComputeType compute;
  int cache_interval = 1, cache_branch = 0;
  std::string cache_schedule = "uniform";
  float tome_ratio = 0.0f;
};

// A number after `prefix` in `part` ("cache3" -> 3), or -1 when `part` is not that.
int number_after(const std::string& part, const std::string& prefix) {
  if (part.size() <= prefix.size() || part.compare(0, prefix.size(), prefix) != 0) return -1;
  const std::string digits = part.substr(prefix.size());
  if (digits.size() > 4 || digits.find_first_not_of("0123456789") != std::string::npos) return -1;
  return std::stoi(digits);
}

QualityMode parse_mode(const std::string& name) {
  const auto bad = [&] {
    return InvalidArgument("unknown quality mode '" + name +
                           "'; modes: fp32, bf16, int8 or auto, optionally followed by +cacheN (step caching every N "
                           "steps), +branchB, +quadratic and +tomeP (token merging, ratio P percent), e.g. "
                           "bf16+cache3, int8+cache3+tome50");
  };
  std::vector<std::string> parts;
  for (size_t begin = 0;;) {
    const size_t plus = name.find('+', begin);
    parts.push_back(name.substr(begin, plus == std::string::npos ? std::string::npos : plus - begin));
    if (plus == std::string::npos) break;
    begin = plus + 1;
  }
  if (parts[0] != "fp32" && parts[0] != "bf16" && parts[0] != "int8" && parts[0] != "auto") throw bad();
  QualityMode m{name, resolve_precision(parts[0])};  // refuses bf16 on a CPU without it, before any work
  bool branch = false;
  for (size_t i = 1; i < parts.size(); ++i) {
    if (parts[i] == "quadratic" && m.cache_schedule == "uniform") {
      m.cache_schedule = "quadratic";
    } else if (const int n = number_after(parts[i], "cache"); n >= 1 && m.cache_interval == 1) {
      m.cache_interval = n;
    } else if (const int b = number_after(parts[i], "branch"); b >= 0 && !branch) {
      m.cache_branch = b;
      branch = true;
    } else if (const int t = number_after(parts[i], "tome"); t >= 1 && t < 100 && m.tome_ratio == 0.0f) {
      m.tome_ratio = static_cast<float>(t) / 100.0f;
    } else {
      throw bad();
    }
  }
  if ((branch || m.cache_schedule != "uniform") && m.cache_interval == 1)
    throw InvalidArgument("quality mode '" + name + "': +branch and +quadratic need +cacheN");
  return m;
}

Txt2ImgRequest request_for(const QualityBenchOptions& o, const QualityPrompt& p, const QualityMode& mode) {
  Txt2ImgRequest r;
  r.prompt = p.prompt;
  r.negative_prompt = p.negative_prompt;
  r.seed = p.seed;
  r.steps = o.steps;
  r.cfg_scale = o.cfg_scale;
  r.sampler = o.sampler;
  r.width = o.width;
  r.height = o.height;
  r.cache_interval = mode.cache_interval;
  r.cache_branch = mode.cache_branch;
  r.cache_schedule = mode.cache_schedule;
  r.tome_ratio = mode.tome_ratio;
  return r;
}

struct ModeRun {
  std::string mode;
  std::vector<double> seconds;                 // per prompt
  std::vector<Tensor> images, latents;         // per prompt
  std::vector<double> psnr_db, ssim, rel_rms;  // per prompt, against the reference (empty for the reference)
  double latent_max_abs = 0;
};

ModeRun run_mode(const QualityBenchOptions& o, const QualityMode& mode, MemoryOptions memory) {
  ModeRun run;
  run.mode = mode.name;
  const Txt2ImgPipeline pipe(open_model(o.model_path, "", o.prediction_type), mode.compute, std::move(memory));
  // A warm-up image first, not counted: the first run at a shape creates the kernels' primitives.
  pipe.run(request_for(o, kPrompts[0], mode));
  for (int i = 0; i < o.prompts; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    Txt2ImgPipeline::Result result = pipe.run(request_for(o, kPrompts[i], mode));
    run.seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    run.images.push_back(std::move(result.image));
    run.latents.push_back(std::move(result.latents));
    if (o.log)
      o.log(mode.name + ": prompt " + std::to_string(i + 1) + "/" + std::to_string(o.prompts) + " in " +
            fixed(run.seconds.back(), 2) + " s");
  }
  return run;
}

void compare(ModeRun& run, const ModeRun& reference) {
  for (size_t i = 0; i < run.images.size(); ++i) {
    run.psnr_db.push_back(image_psnr_db(run.images[i], reference.images[i]));
    run.ssim.push_back(image_ssim(run.images[i], reference.images[i]));
    const LatentError e = latent_error(run.latents[i], reference.latents[i]);
    run.rel_rms.push_back(e.rel_rms);
    run.latent_max_abs = std::max(run.latent_max_abs, e.max_abs);
  }
}

double mean(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return v.empty() ? 0 : s / static_cast<double>(v.size());
}
double minimum(const std::vector<double>& v) { return v.empty() ? 0 : *std::min_element(v.begin(), v.end()); }
// JSON has no infinity: an equal image's PSNR is null.
nlohmann::ordered_json number(double v) { return std::isfinite(v) ? nlohmann::ordered_json(v) : nullptr; }

}  // namespace

BenchResult bench_quality(const QualityBenchOptions& o) {
  if (o.model_path.empty()) throw InvalidArgument("a model path is needed");
  if (o.prompts < 1 || o.prompts > kPromptCount)
    throw InvalidArgument("prompts must be between 1 and " + std::to_string(kPromptCount));
  if (o.modes.empty()) throw InvalidArgument("at least one mode to test is needed");
  std::vector<QualityMode> modes;
  for (const std::string& name : o.modes) modes.push_back(parse_mode(name));
  for (const QualityMode& m : modes) validate(request_for(o, kPrompts[0], m));  // sizes, steps, sampler, guidance
  const int threads = setup_threads(o.threads, o.pin_threads);

  QualityMode reference_mode = parse_mode(o.reference);
  validate(request_for(o, kPrompts[0], reference_mode));
  reference_mode.name = o.reference + " (reference)";
  if (o.log) o.log("reference: " + o.reference + ", " + std::to_string(o.prompts) + " prompts");
  // An fp32 reference never uses the weight cache, so that nothing of the modes under test can leak into it.
  const bool exact_reference = reference_mode.compute == ComputeType::f32;
  const ModeRun reference =
      run_mode(o, reference_mode, MemoryOptions{exact_reference ? "" : o.weight_cache_dir, o.low_memory});
  std::vector<ModeRun> runs;
  for (const QualityMode& m : modes) {
    runs.push_back(run_mode(o, m, MemoryOptions{o.weight_cache_dir, o.low_memory}));
    compare(runs.back(), reference);
    // Only the figures are kept: the images of a mode are done with once compared.
    runs.back().images.clear();
    runs.back().latents.clear();
  }

  const CpuInfo cpu = detect_cpu();
  std::string isa;
  for (const auto& f : cpu.isa) isa += (isa.empty() ? "" : " ") + f;
  const double reference_s = median(reference.seconds);
  std::ostringstream table;
  table << "sdcpu bench --quality: " << o.width << "x" << o.height << ", " << o.steps << " steps, " << o.sampler
        << ", cfg " << fixed(o.cfg_scale, 1) << ", " << o.prompts << " prompts, " << threads << " threads; "
        << cpu.model << " (" << isa << ")\n";
  auto line = [&](const std::string& mode, const std::string& s, const std::string& speedup, const std::string& psnr,
                  const std::string& ssim, const std::string& rel_rms, const std::string& max_abs) {
    char buf[256];
    std::snprintf(buf, sizeof buf, "  %-24s %8s %8s %16s %16s %12s %9s\n", mode.c_str(), s.c_str(), speedup.c_str(),
                  psnr.c_str(), ssim.c_str(), rel_rms.c_str(), max_abs.c_str());
    table << buf;
  };
  line("mode", "s/image", "speedup", "PSNR dB mean/min", "SSIM mean/min", "latent rms", "max abs");
  line(reference_mode.name, fixed(reference_s, 2), "1.00x", "", "", "", "");
  nlohmann::ordered_json j;
  j["cpu"] = {{"model", cpu.model}, {"isa", cpu.isa}};
  j["threads"] = threads;
  j["width"] = o.width;
  j["height"] = o.height;
  j["steps"] = o.steps;
  j["sampler"] = o.sampler;
  j["cfg_scale"] = o.cfg_scale;
  j["prompts"] = o.prompts;
  j["reference"] = {{"mode", o.reference}, {"s_per_image", reference_s}};
  j["modes"] = nlohmann::ordered_json::array();
  for (const ModeRun& run : runs) {
    const double s = median(run.seconds);
    line(run.mode, fixed(s, 2), fixed(reference_s / s, 2) + "x",
         fixed(mean(run.psnr_db), 2) + " / " + fixed(minimum(run.psnr_db), 2),
         fixed(mean(run.ssim), 4) + " / " + fixed(minimum(run.ssim), 4), fixed(mean(run.rel_rms), 5),
         fixed(run.latent_max_abs, 4));
    nlohmann::ordered_json m;
    m["mode"] = run.mode;
    m["s_per_image"] = s;
    m["speedup"] = reference_s / s;
    m["psnr_db"] = {{"mean", number(mean(run.psnr_db))}, {"min", number(minimum(run.psnr_db))}};
    m["ssim"] = {{"mean", mean(run.ssim)}, {"min", minimum(run.ssim)}};
    m["latent_rel_rms_mean"] = mean(run.rel_rms);
    m["latent_max_abs"] = run.latent_max_abs;
    m["per_prompt"] = nlohmann::ordered_json::array();
    for (size_t i = 0; i < run.psnr_db.size(); ++i)
      m["per_prompt"].push_back({{"prompt", kPrompts[i].prompt},
                                 {"seed", kPrompts[i].seed},
                                 {"s", run.seconds[i]},
                                 {"psnr_db", number(run.psnr_db[i])},
                                 {"ssim", run.ssim[i]},
                                 {"latent_rel_rms", run.rel_rms[i]}});
    j["modes"].push_back(m);
  }
  table
      << "  (median time per image after a warm-up image; PSNR and SSIM of each image against the reference image\n"
         "   of the same prompt and seed; latent rms: rms of the final latents' difference over the reference's rms)\n";
  return {table.str(), j.dump(2) + "\n"};
}

}  // namespace sdcpu
