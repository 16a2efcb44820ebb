// sdcpu bench: the analytic UNet FLOP count against the figures in issue 3, a whole bench on the tiny model,
// and the batch semantics (num_images_per_prompt) the throughput figures rely on.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/torch_rng.h"
#include "formats/model_config.h"
#include "kernels/cpu_features.h"
#include "kernels/fma_peak.h"
#include "pipeline/benchmark.h"
#include "pipeline/cpu_usage.h"
#include "pipeline/txt2img.h"
#include "test_support.h"

namespace sdcpu {
namespace {

UNetConfig sd15_unet_config() {
  const auto manifest = nlohmann::json::parse(testing::read_text(SDCPU_FIXTURES_DIR "/../tools/sd15_manifest.json"));
  return parse_unet_config(manifest.at("configs").at("unet").dump());
}

TEST(BenchFlops, Sd15UNetStepMatchesIssueFigures) {
  // Issue 3: one guided step (UNet batch 2) at 512x512 = 1606 GFLOP (3x3 conv 801, linear 467, 1x1 conv 87,
  // attention matmuls 252); at 256x256 = 360 GFLOP.
  const UNetConfig config = sd15_unet_config();
  const UNetFlops f512 = count_unet_flops(config, 2, 64, 64);
  EXPECT_NEAR(f512.total() / 1e9, 1606, 1.0);
  EXPECT_NEAR(f512.conv3x3 / 1e9, 801, 1.0);
  EXPECT_NEAR(f512.linear / 1e9, 467, 1.0);
  EXPECT_NEAR(f512.conv1x1 / 1e9, 87, 1.0);
  EXPECT_NEAR(f512.attention / 1e9, 252, 1.0);
  EXPECT_NEAR(count_unet_flops(config, 2, 32, 32).total() / 1e9, 360, 1.0);
  // Linear in the batch: the guidance batch is counted, not assumed.
  EXPECT_NEAR(count_unet_flops(config, 1, 64, 64).total() * 2, f512.total(), 1.0);
  EXPECT_THROW(count_unet_flops(config, 0, 64, 64), InvalidArgument);
}

// Step caching's shallow passes (nets/unet.h UNetStepCache). Branch 0 at 512x512, guided, counted by hand: the
// time embedding, conv_in, up_blocks.3's last resnet (640 -> 320 with its 1x1 shortcut) and its transformer (320
// channels, 4096 tokens, 77 context tokens of 768), conv_out: 126.50 GFLOP, 1/12.7 of the full pass.
TEST(BenchFlops, ShallowPassesCountOnlyTheLayersAboveTheCut) {
  const UNetConfig config = sd15_unet_config();
  const double full = count_unet_flops(config, 2, 64, 64).total();
  EXPECT_NEAR(count_unet_flops(config, 2, 64, 64, 77, 0).total() / 1e9, 126.504, 0.001);
  double previous = 0;
  for (int branch = 0; branch < 12; ++branch) {  // deeper cuts recompute more, never all
    SCOPED_TRACE("branch " + std::to_string(branch));
    const double shallow = count_unet_flops(config, 2, 64, 64, 77, branch).total();
    EXPECT_GT(shallow, previous);
    EXPECT_LT(shallow, full);
    previous = shallow;
  }
  EXPECT_THROW(count_unet_flops(config, 2, 64, 64, 77, 12), InvalidArgument);
}

// CLIP ViT-L/14's text transformer, 2 prompts of 77 tokens: 12 layers of 4 x 768^2 + 2 x 768 x 3072 per token, and
// the two 77 x 77 attention products: 26.60 GFLOP.
TEST(BenchFlops, ClipTextEncoderIsCounted) {
  const ClipTextConfig c;  // the CLIP ViT-L/14 defaults
  EXPECT_NEAR(count_clip_text_flops(c, 2) / 1e9, 26.597, 0.001);
  EXPECT_NEAR(count_clip_text_flops(c, 2), 2 * count_clip_text_flops(c, 1), 1.0);
  EXPECT_THROW(count_clip_text_flops(c, 0), InvalidArgument);
}

// SDXL base 1.0's published configs (tools/sdxl_base_configs.json).
nlohmann::json sdxl_base_configs() {
  return nlohmann::json::parse(testing::read_text(SDCPU_SOURCE_DIR "/tools/sdxl_base_configs.json"));
}

// SDXL base 1.0's UNet, one guided step (batch 2) at 1024x1024 (128x128 latents), 77 context tokens of 2048, counted
// by hand level by level: no attention at 128x128; 2-layer transformers at 64x64 (640 channels), 10-layer ones at
// 32x32 (1280) in the down path (2), the mid block (1) and the up path (3 each); the time embedding 320 -> 1280 ->
// 1280 and the add_embedding 2816 -> 1280 -> 1280. 3x3 conv 3112.006, 1x1 conv 134.218, linear 8708.418,
// attention 1567.831: 13522.473 GFLOP (6.8 TFLOP per latent, 8.4x SD 1.5's step at 512x512). At 512x512, batch 1
// (sdxl-turbo): 1588.779 GFLOP.
TEST(BenchFlops, SdxlUNetStepIsCountedByHand) {
  const UNetConfig config = parse_unet_config(sdxl_base_configs().at("unet").dump());
  const UNetFlops f = count_unet_flops(config, 2, 128, 128);
  EXPECT_NEAR(f.conv3x3 / 1e9, 3112.006, 0.001);
  EXPECT_NEAR(f.conv1x1 / 1e9, 134.218, 0.001);
  EXPECT_NEAR(f.linear / 1e9, 8708.418, 0.001);
  EXPECT_NEAR(f.attention / 1e9, 1567.831, 0.001);
  EXPECT_NEAR(count_unet_flops(config, 1, 64, 64).total() / 1e9, 1588.779, 0.001);
  // The add_embedding is counted: without it the step is 2 x (2816 + 1280) x 1280 x 2 FLOP lighter.
  UNetConfig without = config;
  without.addition_embed_type.clear();
  EXPECT_NEAR(f.total() - count_unet_flops(without, 2, 128, 128).total(), 2.0 * 2 * (2816 + 1280) * 1280, 1.0);
}

// SDXL's second text encoder (OpenCLIP ViT-bigG/14 with projection), 2 prompts of 77 tokens: 32 layers of
// 4 x 1280^2 + 2 x 1280 x 5120 per token and the 77 x 77 attention products, plus text_projection 1280 x 1280 on
// the 2 pooled tokens: 195.726 GFLOP; with the first encoder's 26.597 the bench's text encoding is 222.32.
TEST(BenchFlops, SdxlSecondTextEncoderIsCounted) {
  const ClipTextConfig c = parse_clip_text_config(sdxl_base_configs().at("text_encoder_2").dump());
  ASSERT_TRUE(c.with_projection);
  EXPECT_NEAR(count_clip_text_flops(c, 2) / 1e9, 195.726, 0.001);
  EXPECT_NEAR(count_clip_text_flops(c, 1) / 1e9, 97.863, 0.001);
}

TEST(BenchFlops, Sd15VaeDecodeMatchesIssueFigures) {
  // SD 1.5's VAE (the diffusers default config: 128/256/512/512, 2 layers per block): 2515 GFLOP per decode at
  // 512x512 (a 64x64 latent), 622 at 256x256, almost all of it 3x3 convolutions.
  const VaeConfig c;
  EXPECT_NEAR(count_vae_decoder_flops(c, 1, 64, 64) / 1e9, 2515.0, 2.0);
  EXPECT_NEAR(count_vae_decoder_flops(c, 1, 32, 32) / 1e9, 622.0, 1.0);
  EXPECT_NEAR(count_vae_decoder_flops(c, 2, 32, 32), 2 * count_vae_decoder_flops(c, 1, 32, 32), 1.0);
  EXPECT_THROW(count_vae_decoder_flops(c, 0, 32, 32), InvalidArgument);
}

// madebyollin/taesd's decoder at 512x512 (a 64x64 latent), counted by hand level by level: conv_in 4->64 at 64x64;
// 9 convs at 64x64; at 128x128 and 256x256 the level's conv after the upsample plus 9 block convs each; at 512x512
// the upsampled conv, 3 block convs and conv_out 64->3. 2 x Cin x Cout x 9 x H x W each: 141.35 GFLOP, 5.6% of
// the SD 1.5 VAE decoder's 2515.
TEST(BenchFlops, TaesdDecoderFlopsAreCounted) {
  const TaesdConfig c;  // diffusers' AutoencoderTiny defaults = madebyollin/taesd
  EXPECT_NEAR(count_taesd_decoder_flops(c, 1, 64, 64), 141350141952.0, 1.0);
  EXPECT_NEAR(count_taesd_decoder_flops(c, 2, 32, 48), 2 * count_taesd_decoder_flops(c, 1, 32, 48), 1.0);
  EXPECT_NEAR(count_taesd_decoder_flops(c, 1, 32, 32), count_taesd_decoder_flops(c, 1, 64, 64) / 4, 1.0);
  EXPECT_THROW(count_taesd_decoder_flops(c, 1, 0, 32), InvalidArgument);
}

TEST(BenchFlops, FmaPeakIsMeasured) {
  EXPECT_GT(measure_fma_peak_gflops(PeakPrecision::kFp32, 1, 0.01), 0.0);
  if (fma_peak_supported(PeakPrecision::kBf16)) {
    EXPECT_GT(measure_fma_peak_gflops(PeakPrecision::kBf16, 1, 0.01), 0.0);
  }
}

TEST(Bench, TinyModelReportHasEveryField) {
  BenchOptions o;
  o.model_path = testing::fixture("tiny-sd");
  o.weight_cache_dir = "";  // explicit, whatever the defaults: no cache, all weights in memory
  o.low_memory = false;
  o.width = o.height = 64;
  o.steps = 2;
  o.runs = 1;
  o.batch_sizes = {1, 2};
  const BenchReport report = run_benchmark(o);
  const auto j = nlohmann::json::parse(to_json(report));
  for (const char* key : {"threads",
                          "width",
                          "height",
                          "steps",
                          "load_s",
                          "first_image_s",
                          "text_encode_s",
                          "unet_step_s",
                          "vae_decode_s",
                          "total_s",
                          "peak_rss_mb",
                          "unet_gflop_per_step",
                          "unet_gflops_achieved",
                          "machine_peak_gflops",
                          "unet_efficiency",
                          "vae_gflop_per_decode",
                          "vae_gflops_achieved",
                          "vae_efficiency",
                          "text_encoder_gflop",
                          "unet_gflop_per_image",
                          "image_gflop",
                          "image_flop_bound_s",
                          "total_vs_flop_bound"}) {
    SCOPED_TRACE(key);
    ASSERT_TRUE(j.contains(key));
    EXPECT_GT(j.at(key).get<double>(), 0.0);
  }
  EXPECT_EQ(j.at("precision"), "fp32");
  EXPECT_EQ(j.at("sampler"), "dpmpp_2m");
  EXPECT_FALSE(j.at("cpu").at("model").get<std::string>().empty());
  EXPECT_GT(j.at("images_per_min").at("1").get<double>(), 0.0);
  EXPECT_GT(j.at("images_per_min").at("2").get<double>(), 0.0);
  EXPECT_TRUE(j.at("psnr_db_vs_fp32").is_null());
  EXPECT_LE(report.unet_efficiency, 1.5);  // a sanity bound: far above 1 would mean a wrong count or peak
  EXPECT_FALSE(format_table(report).empty());
  // CPU use over the timed runs: this process computed; nobody used more than the machine has.
  const auto& cpu = j.at("timed_runs_cpu");
  EXPECT_GT(cpu.at("wall_s").get<double>(), 0.0);
  EXPECT_GT(cpu.at("process_cpu_s").get<double>(), 0.0);
  EXPECT_GE(cpu.at("others_cpu_s").get<double>(), 0.0);
  EXPECT_GE(cpu.at("steal_s").get<double>(), 0.0);
  EXPECT_GE(cpu.at("cpus").get<int>(), 1);
  EXPECT_LE(cpu.at("process_cpu_s").get<double>(),
            cpu.at("cpus").get<double>() * cpu.at("wall_s").get<double>() * 1.05 + 0.05);
  EXPECT_NE(format_table(report).find("cpus during runs"), std::string::npos);
}

// proc(5)'s aggregate line: busy = user + nice + system + irq + softirq, steal apart, idle and iowait left out.
TEST(BenchCpuUse, ProcStatIsParsed) {
  const std::string text =
      "cpu  1000 20 300 5000 40 5 6 70 0 0\n"
      "cpu0 500 10 150 2500 20 2 3 35 0 0\n"
      "intr 12345\n";
  const MachineCpuTimes t = parse_proc_stat(text, 100.0);
  EXPECT_DOUBLE_EQ(t.busy_s, (1000 + 20 + 300 + 5 + 6) / 100.0);
  EXPECT_DOUBLE_EQ(t.steal_s, 0.70);
  EXPECT_THROW(parse_proc_stat("cpu0 1 2 3 4 5 6 7 8\n", 100.0), InvalidArgument);  // no aggregate line
  EXPECT_THROW(parse_proc_stat("cpu  1 2 3\n", 100.0), InvalidArgument);            // too few fields
}

// A busy loop on this thread shows in this process's CPU time, and in the machine's busy time at least as much
// (up to the clock ticks' rounding).
TEST(BenchCpuUse, ABusyThreadIsCounted) {
  const MachineCpuTimes machine0 = machine_cpu_times();
  const double self0 = process_cpu_seconds();
  volatile double x = 0;
  while (process_cpu_seconds() - self0 < 0.3) x = x + 1.0;
  const double self = process_cpu_seconds() - self0;
  EXPECT_GE(self, 0.3);
  EXPECT_GE(machine_cpu_times().busy_s - machine0.busy_s, self - 0.05);
}

// With step caching the report tells full and shallow passes apart, and counts each image's UNet work from both.
TEST(Bench, StepCachingIsReported) {
  BenchOptions o;
  o.model_path = testing::fixture("tiny-sd");
  o.width = o.height = 64;
  o.steps = 3;
  o.runs = 1;
  o.cache_interval = 2;  // full passes at steps 0 and 2, a shallow one at step 1
  o.cache_branch = 1;
  const BenchReport r = run_benchmark(o);
  EXPECT_EQ(r.unet_full_passes, 2);
  EXPECT_EQ(r.unet_shallow_passes, 1);
  EXPECT_GT(r.unet_shallow_step_s, 0.0);
  EXPECT_GT(r.unet_shallow_flops.total(), 0.0);
  EXPECT_LT(r.unet_shallow_flops.total(), r.unet_flops.total());
  EXPECT_DOUBLE_EQ(r.unet_flops_per_image, 2 * r.unet_flops.total() + r.unet_shallow_flops.total());
  EXPECT_NE(format_table(r).find("unet shallow step"), std::string::npos);
  const auto j = nlohmann::json::parse(to_json(r));
  EXPECT_EQ(j.at("cache_interval"), 2);
  EXPECT_EQ(j.at("cache_branch"), 1);
}

// bf16 runs the quality check: the same request in fp32, compared. On the tiny random model bf16 moves the
// latents visibly (its random weights amplify rounding) but the image stays far above noise level.
TEST(Bench, Bf16ReportsQualityAgainstFp32) {
  if (!cpu_has_native_bf16()) GTEST_SKIP() << "no AVX512_BF16 / AMX on this CPU";
  BenchOptions o;
  o.model_path = testing::fixture("tiny-sd");
  o.weight_cache_dir = "";  // explicit, whatever the defaults: no cache, all weights in memory
  o.low_memory = false;
  o.width = o.height = 64;
  o.steps = 2;
  o.runs = 1;
  o.precision = "bf16";
  const BenchReport report = run_benchmark(o);
  const auto j = nlohmann::json::parse(to_json(report));
  EXPECT_EQ(j.at("precision"), "bf16");
  ASSERT_TRUE(j.at("psnr_db_vs_fp32").is_number());
  ASSERT_TRUE(j.at("max_abs_latent_diff_vs_fp32").is_number());
  const double psnr = j.at("psnr_db_vs_fp32").get<double>(), diff = j.at("max_abs_latent_diff_vs_fp32").get<double>();
  std::printf("[ bf16     ] tiny-sd 64x64, 2 steps: PSNR %.2f dB, max abs latent difference %.4g\n", psnr, diff);
  EXPECT_GT(psnr, 30.0);
  EXPECT_LT(psnr, 200.0);  // not identical to fp32: bf16 really ran
  EXPECT_GT(diff, 0.0);
  EXPECT_GT(j.at("machine_peak_gflops").get<double>(), 0.0);
  o.precision = "auto";
  EXPECT_EQ(run_benchmark(o).precision, "bf16");  // auto picks bf16 where the CPU has it
}

TEST(Bench, BadOptionsAreRejectedBeforeLoading) {
  BenchOptions o;
  o.model_path = "/does/not/exist";
  auto message = [&](const BenchOptions& bad) {
    try {
      run_benchmark(bad);
    } catch (const InvalidArgument& e) {
      return std::string(e.what());
    }
    return std::string("(accepted)");
  };
  BenchOptions b = o;
  if (!cpu_has_native_bf16()) {
    b.precision = "bf16";
    EXPECT_NE(message(b).find("AVX512_BF16"), std::string::npos);
  }
  b = o;
  b.precision = "fp64";
  EXPECT_NE(message(b).find("precision"), std::string::npos);
  b = o;
  b.batch_sizes = {0};
  EXPECT_NE(message(b).find("batch size"), std::string::npos);
  b = o;
  b.runs = 0;
  EXPECT_NE(message(b).find("runs"), std::string::npos);
  b = o;
  b.width = 100;
  EXPECT_NE(message(b).find("width"), std::string::npos);
}

// A batch of B (num_images_per_prompt) must give each image what a batch-1 run from the same initial
// latents gives: the batch only shares the UNet calls.
TEST(Txt2ImgBatch, EachImageOfABatchMatchesItsOwnRun) {
  const Txt2ImgPipeline pipe(open_model(testing::fixture("tiny-sd")));
  for (const float cfg : {7.5f, 1.0f}) {
    SCOPED_TRACE("cfg " + std::to_string(cfg));
    Txt2ImgRequest r;
    r.prompt = "a photo of an astronaut riding a horse on mars";
    r.negative_prompt = "blurry";
    r.sampler = "dpmpp_2m";  // deterministic: no noise drawn during sampling
    r.steps = 3;
    r.cfg_scale = cfg;
    r.seed = 7;
    r.width = 64;
    r.height = 72;  // not square, so a transposed latent would show
    r.batch_size = 2;
    const auto batch = pipe.run(r);
    ASSERT_EQ(batch.latents.shape(), (Shape{2, 4, 9, 8}));
    ASSERT_EQ(batch.image.shape(), (Shape{2, 3, 72, 64}));
    EXPECT_EQ(batch.times.denoise_step_s.size(), 3u);

    // diffusers draws the batch's noise in one randn([B, C, h, w]) from the seeded generator.
    const Tensor noise = TorchGenerator(r.seed).randn({2, 4, 9, 8});
    Txt2ImgRequest given = r;
    given.latents = noise;
    EXPECT_EQ(pipe.run(given).latents.to_vector(), batch.latents.to_vector());

    for (int k = 0; k < 2; ++k) {
      SCOPED_TRACE("image " + std::to_string(k));
      Txt2ImgRequest single = r;
      single.batch_size = 1;
      single.latents = noise.slice0(k, k + 1).clone();
      const auto one = pipe.run(single);
      // Different batch sizes may take different kernel blockings, so allow rounding-level differences.
      EXPECT_TENSOR_NEAR(batch.latents.slice0(k, k + 1), one.latents, 1e-5);
      EXPECT_TENSOR_NEAR(batch.image.slice0(k, k + 1), one.image, 1e-5);
    }
  }
}

TEST(Txt2ImgBatch, StageTimesAreReported) {
  const Txt2ImgPipeline pipe(open_model(testing::fixture("tiny-sd")));
  Txt2ImgRequest r;
  r.prompt = "x";
  r.steps = 2;
  r.width = r.height = 64;
  const StageTimes t = pipe.run(r).times;
  ASSERT_EQ(t.denoise_step_s.size(), 2u);
  EXPECT_GT(t.text_encode_s, 0);
  EXPECT_GT(t.vae_decode_s, 0);
  double sum = t.text_encode_s + t.vae_decode_s;
  for (double s : t.denoise_step_s) {
    EXPECT_GT(s, 0);
    sum += s;
  }
  EXPECT_LE(sum, t.total_s);
}

TEST(Txt2ImgBatch, BadBatchOrLatentsAreRejected) {
  const Txt2ImgPipeline pipe(open_model(testing::fixture("tiny-sd")));
  Txt2ImgRequest r;
  r.prompt = "x";
  r.steps = 1;
  r.width = r.height = 64;
  r.batch_size = 0;
  EXPECT_THROW(pipe.run(r), InvalidArgument);
  r.batch_size = 1000;
  EXPECT_THROW(pipe.run(r), InvalidArgument);
  r.batch_size = 2;
  r.latents = Tensor::zeros({1, 4, 8, 8});  // batch 1 latents for a batch of 2
  EXPECT_THROW(pipe.run(r), InvalidArgument);
}

}  // namespace
}  // namespace sdcpu
