// The few-step families against diffusers 0.27.2 (goldens of tests/oracle/make_few_step_goldens.py, in
// tests/goldens/few_step): an LCM-distilled UNet (time_cond_proj_dim: the guidance-scale embedding through
// time_embedding.cond_proj, one UNet pass per step) run as LatentConsistencyModelPipeline runs it, and an
// SD-Turbo-style folder (Euler / Euler a with timestep_spacing "trailing", guidance 0, 1 and 4 steps) run as
// StableDiffusionPipeline runs it. The model folders are assembled at test time from the goldens' UNet and scheduler
// configs and tiny-sd's text encoder, tokenizer and VAE (../shared/fixtures/tiny-sd), linked in, not copied.
// Also the family descriptions (pipeline/model_family.h).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "core/image_png.h"
#include "nets/unet.h"
#include "pipeline/guidance_embedding.h"
#include "pipeline/model_family.h"
#include "pipeline/txt2img.h"
#include "test_support.h"

namespace sdcpu {
namespace {

namespace fs = std::filesystem;

const std::string kGoldens = std::string(SDCPU_SOURCE_DIR) + "/tests/goldens/few_step";

// A diffusers folder in a temporary directory: `own` components from tests/goldens/few_step/<name>, the others
// linked to tiny-sd's.
std::string assemble_folder(const std::string& name, const std::vector<std::string>& own) {
  const fs::path dir = fs::temp_directory_path() / ("sdcpu-few-step-" + std::to_string(::getpid()) + "-" + name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  fs::copy_file(fs::path(kGoldens) / name / "model_index.json", dir / "model_index.json");
  for (const char* component : {"unet", "scheduler", "text_encoder", "tokenizer", "vae"}) {
    const bool ours = std::find(own.begin(), own.end(), component) != own.end();
    fs::create_directory_symlink(
        ours ? fs::path(kGoldens) / name / component : fs::path(testing::fixture("tiny-sd")) / component,
        dir / component);
  }
  return dir.string();
}

const std::string& lcm_folder() {
  static const std::string dir = assemble_folder("tiny-lcm", {"unet", "scheduler"});
  return dir;
}
const std::string& turbo_folder() {
  static const std::string dir = assemble_folder("tiny-turbo", {"scheduler"});
  return dir;
}
const Txt2ImgPipeline& lcm_pipeline() {
  static const Txt2ImgPipeline pipe(open_model(lcm_folder()));
  return pipe;
}
const Txt2ImgPipeline& turbo_pipeline() {
  static const Txt2ImgPipeline pipe(open_model(turbo_folder()));
  return pipe;
}

Txt2ImgRequest request_of(const SafetensorsFile& g) {
  Txt2ImgRequest r;
  r.prompt = g.metadata().at("prompt");
  r.negative_prompt =
      "ignored: no unconditional pass";  // LatentConsistencyModelPipeline takes none; guidance <= 1 none
  r.steps = std::stoi(g.metadata().at("steps"));
  r.cfg_scale = std::stof(g.metadata().at("guidance_scale"));
  r.sampler = g.metadata().at("scheduler");
  r.seed = std::stoull(g.metadata().at("seed"));
  r.width = std::stoi(g.metadata().at("width"));
  r.height = std::stoi(g.metadata().at("height"));
  return r;
}

std::vector<double> read_f64(const SafetensorsFile& f, const std::string& name) {
  const TensorInfo* info = f.find(name);
  if (!info) return {};
  std::vector<double> v((info->end - info->begin) / sizeof(double));
  std::memcpy(v.data(), f.bytes(*info), v.size() * sizeof(double));
  return v;
}

// The run free against the golden's per-step latents (1e-4 of their scale) and its image (every pixel within 1/255
// of diffusers' numpy_to_pil rounding, almost all exact).
void expect_matches_pipeline_golden(const Txt2ImgPipeline& pipe, const std::string& golden_name) {
  SCOPED_TRACE(golden_name);
  const SafetensorsFile& g = testing::repo_golden("few_step/" + golden_name + ".safetensors");
  ASSERT_LT(std::stod(g.metadata().at("fp64_rel_diff")), 1e-5);  // a stable reference: checked free-running
  const Txt2ImgRequest request = request_of(g);
  auto scheduler = make_scheduler(request.sampler, pipe.scheduler_settings(request).config);
  scheduler->set_timesteps(request.steps);
  EXPECT_EQ(scheduler->timesteps(), read_f64(g, "timesteps"));

  const Tensor expected = g.read_f32("latents_per_step");
  const Shape latent_shape = {1, 4, request.height / 8, request.width / 8};
  int steps_seen = 0;
  auto result = pipe.run(request, [&](int step, int, const Tensor& latents) {
    SCOPED_TRACE("step " + std::to_string(step));
    ASSERT_LT(step, expected.dim(0));
    EXPECT_TENSOR_NEAR(latents, expected.slice0(step, step + 1).reshape(latent_shape), 1e-4);
    ++steps_seen;
  });
  EXPECT_EQ(steps_seen, expected.dim(0));
  // LatentConsistencyModelPipeline decodes the last step's denoised sample: the final latents are it.
  if (g.find("denoised_per_step"))
    EXPECT_TENSOR_NEAR(result.latents,
                       g.read_f32("denoised_per_step").slice0(steps_seen - 1, steps_seen).reshape(latent_shape), 1e-4);

  const Tensor golden_image = g.read_f32("image");
  const std::vector<uint8_t> ours = image_to_rgb8(result.image, 0);
  ASSERT_EQ(static_cast<int64_t>(ours.size()), golden_image.numel());
  int64_t exact = 0, worst = 0;
  for (int64_t i = 0; i < golden_image.numel(); ++i) {
    const int64_t diff = std::llabs(static_cast<int64_t>(std::nearbyint(golden_image[i] * 255.0f)) - ours[i]);
    worst = std::max(worst, diff);
    exact += diff == 0;
  }
  EXPECT_LE(worst, 1);
  EXPECT_GE(static_cast<double>(exact) / golden_image.numel(), 0.99);
  if (std::getenv("SDCPU_TEST_VERBOSE"))
    std::printf("  %s: %.4f%% pixels exact, worst %lld/255\n", golden_name.c_str(),
                100.0 * exact / golden_image.numel(), static_cast<long long>(worst));
}

TEST(FewStep, GuidanceEmbeddingIsDiffusers) {
  const SafetensorsFile& g = testing::repo_golden("few_step/lcm_guidance_embedding.safetensors");
  for (int dim : {32, 256, 7}) {
    for (const char* w : {"0", "1", "1.5", "8.5"}) {
      SCOPED_TRACE(std::to_string(dim) + " " + w);
      EXPECT_TENSOR_NEAR(guidance_scale_embedding(std::stof(w), 2, dim),
                         g.read_f32("w_embedding_" + std::to_string(dim) + "_" + w), 1e-6);
    }
  }
  EXPECT_THROW(guidance_scale_embedding(8.5f, 1, 3), ModelError);
}

TEST(FewStep, LcmUNetAddsTheConditionThroughCondProj) {
  const ModelFiles files = open_model(lcm_folder());
  ASSERT_EQ(files.unet_config.time_cond_proj_dim, 32);
  const UNet2DConditionModel unet(files.unet_config, *files.unet);
  const SafetensorsFile& g = testing::repo_golden("few_step/unet_lcm_timestep_cond.safetensors");
  const Tensor sample = g.read_f32("sample"), states = g.read_f32("encoder_hidden_states");
  const float t = g.read_f32("timestep")[0];
  EXPECT_TENSOR_NEAR(unet.forward(sample, t, states, {Tensor(), Tensor(), g.read_f32("timestep_cond")}),
                     g.read_f32("out"), 1e-4);
  EXPECT_TENSOR_NEAR(unet.forward(sample, t, states), g.read_f32("out_no_cond"), 1e-4);
  // The golden's condition moves the output by 0.1 (of 1.4): a missing cond_proj could not pass.
  EXPECT_GT(testing::compare(g.read_f32("out"), g.read_f32("out_no_cond")).max_abs, 0.05);
  EXPECT_THROW(unet.forward(sample, t, states, {Tensor(), Tensor(), Tensor({2, 31})}), InvalidArgument);

  const ModelFiles plain = open_model(testing::fixture("tiny-sd"));
  const UNet2DConditionModel plain_unet(plain.unet_config, *plain.unet);
  EXPECT_THROW(
      plain_unet.forward(Tensor({1, 4, 8, 8}), 1.0f, Tensor({1, 77, 64}), {Tensor(), Tensor(), Tensor({1, 32})}),
      InvalidArgument);
}

TEST(FewStep, LcmUNetRunsAsLatentConsistencyModelPipeline) {
  EXPECT_FALSE(lcm_pipeline().classifier_free_guidance(8.5f));  // the guidance is embedded
  expect_matches_pipeline_golden(lcm_pipeline(), "pipeline_lcm_lcm_4steps_cfg8.5");
}

TEST(FewStep, LcmUNetWithAnotherSamplerRunsAsStableDiffusionPipeline) {
  expect_matches_pipeline_golden(lcm_pipeline(), "pipeline_lcm_euler_4steps_cfg8.5");
}

TEST(FewStep, TurboFolderAtGuidanceZeroMatchesStableDiffusionPipeline) {
  EXPECT_FALSE(turbo_pipeline().classifier_free_guidance(0.0f));
  EXPECT_TRUE(turbo_pipeline().classifier_free_guidance(1.5f));
  for (const char* name :
       {"pipeline_turbo_euler_a_1steps_cfg0", "pipeline_turbo_euler_a_4steps_cfg0", "pipeline_turbo_euler_1steps_cfg0"})
    expect_matches_pipeline_golden(turbo_pipeline(), name);
}

TEST(FewStep, LcmBatchOfRequestsGivesEachItsOwnRun) {
  Txt2ImgRequest a = request_of(testing::repo_golden("few_step/pipeline_lcm_lcm_4steps_cfg8.5.safetensors"));
  Txt2ImgRequest b = a;
  b.seed = 7;
  b.prompt = "a lighthouse";
  const auto batch = lcm_pipeline().run_batch({a, b});
  EXPECT_TENSOR_NEAR(batch[0].latents, lcm_pipeline().run(a).latents, 1e-4);
  EXPECT_TENSOR_NEAR(batch[1].latents, lcm_pipeline().run(b).latents, 1e-4);
}

TEST(FewStep, GuidanceZeroIsValid) {
  Txt2ImgRequest r;
  r.cfg_scale = 0.0f;
  EXPECT_NO_THROW(validate(r));
  r.cfg_scale = -0.5f;
  EXPECT_THROW(validate(r), InvalidArgument);
}

// ---- families -----------------------------------------------------------------------------------------------------

ModelFiles files_with(const std::string& architecture, int cross_attention_dim, int sample_size) {
  ModelFiles f;
  f.architecture = architecture;
  f.unet_config.cross_attention_dim = cross_attention_dim;
  f.unet_config.use_linear_projection = architecture == "SD 2.x";
  f.unet_config.sample_size = sample_size;
  return f;
}

StoredSchedulerConfig stored(const std::string& json) { return parse_scheduler_config(json); }

TEST(ModelFamilies, AreDetectedFromTheFiles) {
  const ModelFamily sd1 = detect_model_family(files_with("SD 1.x", 768, 64), stored("{}"));
  EXPECT_EQ(sd1.name, "sd1");
  EXPECT_EQ(sd1.width, 512);
  EXPECT_EQ(sd1.steps, 20);
  EXPECT_EQ(sd1.sampler, "dpmpp_2m");

  EXPECT_EQ(detect_model_family(files_with("SD 2.x", 1024, 64), stored(R"({"prediction_type": "epsilon"})")).name,
            "sd2");
  const ModelFamily v =
      detect_model_family(files_with("SD 2.x", 1024, 96), stored(R"({"prediction_type": "v_prediction"})"));
  EXPECT_EQ(v.name, "sd2-v");
  EXPECT_EQ(v.width, 768);
  EXPECT_NE(v.reason.find("v_prediction"), std::string::npos);

  // stabilityai/sd-turbo's scheduler config: Euler, trailing, epsilon.
  const ModelFamily turbo = detect_model_family(
      files_with("SD 2.x", 1024, 64),
      stored(
          R"({"_class_name": "EulerDiscreteScheduler", "timestep_spacing": "trailing", "prediction_type": "epsilon"})"));
  EXPECT_EQ(turbo.name, "sd-turbo");
  EXPECT_EQ(turbo.steps, 1);
  EXPECT_EQ(turbo.cfg_scale, 0.0f);
  EXPECT_EQ(turbo.sampler, "euler");
  EXPECT_NE(turbo.reason.find("trailing"), std::string::npos);

  // SDXL base (sample_size 128) and stabilityai/sdxl-turbo (sample_size 64, Euler a, trailing).
  const ModelFamily sdxl = detect_model_family(files_with("SDXL", 2048, 128), stored("{}"));
  EXPECT_EQ(sdxl.name, "sdxl");
  EXPECT_EQ(sdxl.width, 1024);
  EXPECT_EQ(sdxl.cfg_scale, 5.0f);
  const ModelFamily xl_turbo = detect_model_family(
      files_with("SDXL", 2048, 64),
      stored(R"({"_class_name": "EulerAncestralDiscreteScheduler", "timestep_spacing": "trailing"})"));
  EXPECT_EQ(xl_turbo.name, "sdxl-turbo");
  EXPECT_EQ(xl_turbo.width, 512);
  EXPECT_EQ(xl_turbo.steps, 1);
  EXPECT_EQ(xl_turbo.cfg_scale, 0.0f);
  EXPECT_EQ(xl_turbo.sampler, "euler_a");

  const ModelFiles lcm = open_model(lcm_folder());
  const ModelFamily lcm_family = detect_model_family(lcm, lcm_pipeline().scheduler_config());
  EXPECT_EQ(lcm_family.name, "lcm");
  EXPECT_EQ(lcm_family.steps, 4);
  EXPECT_EQ(lcm_family.cfg_scale, 8.5f);
  EXPECT_EQ(lcm_family.sampler, "lcm");
  EXPECT_EQ(lcm_family.width, 128);  // sample_size 16 x 8
  EXPECT_NE(lcm_family.reason.find("time_cond_proj_dim 32"), std::string::npos);
  EXPECT_TRUE(lcm_family.embedded_guidance);

  // An LCMScheduler config without the UNet's embedding (an LCM-LoRA fused into an ordinary UNet).
  const ModelFamily lora =
      detect_model_family(files_with("SD 1.x", 768, 64), stored(R"({"_class_name": "LCMScheduler"})"));
  EXPECT_EQ(lora.name, "lcm");
  EXPECT_EQ(lora.cfg_scale, 1.0f);
  EXPECT_FALSE(lora.embedded_guidance);
}

TEST(ModelFamilies, CanBeChosenByName) {
  const ModelFiles turbo = open_model(turbo_folder());
  // tiny-sd's UNet is SD 1.x-like: nothing in the files says Turbo.
  EXPECT_EQ(detect_model_family(turbo, turbo_pipeline().scheduler_config()).name, "sd1");
  const ModelFamily chosen = model_family_named("sd-turbo", turbo, turbo_pipeline().scheduler_config());
  EXPECT_EQ(chosen.name, "sd-turbo");
  EXPECT_EQ(chosen.sampler, "euler_a");  // the folder's EulerAncestralDiscreteScheduler
  EXPECT_EQ(chosen.steps, 1);
  EXPECT_NE(chosen.reason.find("--family"), std::string::npos);
  EXPECT_THROW(model_family_named("sdxl-lightning", turbo, turbo_pipeline().scheduler_config()), InvalidArgument);
}

}  // namespace
}  // namespace sdcpu
