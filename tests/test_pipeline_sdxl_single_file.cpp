// SDXL single files end to end against diffusers 0.27.2's StableDiffusionXLPipeline.from_single_file on the same
// file (tests/goldens/tiny-sdxl-single, made by tests/oracle/make_sdxl_single_file_goldens.py): per-step latents and
// the image of a guided Euler run and an unguided Euler a run; the configs sdcpu derives against those diffusers
// built; and files it must refuse.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/image_png.h"
#include "formats/model_files.h"
#include "pipeline/txt2img.h"
#include "sdxl_single_file_fixture.h"
#include "test_support.h"

namespace sdcpu {
namespace {

const char* kPrompt = "a photo of an astronaut riding a horse on mars";

const Txt2ImgPipeline& pipeline() {
  static const Txt2ImgPipeline pipe(open_model(testing::tiny_sdxl_file()));
  return pipe;
}

TEST(SdxlSingleFile, ConfigsAreWhatFromSingleFileBuilt) {
  const SafetensorsFile& g = testing::repo_golden("tiny-sdxl-single/sdxl_euler_6steps_cfg5.safetensors");
  const ModelFiles m = open_model(testing::tiny_sdxl_file());
  EXPECT_EQ(m.architecture, "SDXL");
  ASSERT_TRUE(m.text_encoder_2);
  const auto unet = nlohmann::json::parse(g.metadata().at("unet_config"));
  EXPECT_EQ(m.unet_config.cross_attention_dim, unet.at("cross_attention_dim").get<int>());
  EXPECT_EQ(m.unet_config.addition_embed_type, unet.at("addition_embed_type").get<std::string>());
  EXPECT_EQ(m.unet_config.addition_time_embed_dim, unet.at("addition_time_embed_dim").get<int>());
  EXPECT_EQ(m.unet_config.projection_class_embeddings_input_dim,
            unet.at("projection_class_embeddings_input_dim").get<int>());
  EXPECT_EQ(m.unet_config.block_out_channels, unet.at("block_out_channels").get<std::vector<int>>());
  EXPECT_EQ(m.unet_config.num_attention_heads, unet.at("attention_head_dim").get<std::vector<int>>());
  EXPECT_EQ(m.unet_config.transformer_layers_per_block, unet.at("transformer_layers_per_block").get<std::vector<int>>());
  EXPECT_EQ(m.unet_config.sample_size, unet.at("sample_size").get<int>());
  const auto vae = nlohmann::json::parse(g.metadata().at("vae_config"));
  EXPECT_FLOAT_EQ(m.vae_config.scaling_factor, vae.at("scaling_factor").get<float>());
  const auto te2 = nlohmann::json::parse(g.metadata().at("text_encoder_2_config"));
  EXPECT_EQ(m.text_encoder_2_config.num_hidden_layers, te2.at("num_hidden_layers").get<int>());
  EXPECT_EQ(m.text_encoder_2_config.projection_dim, te2.at("projection_dim").get<int>());
  EXPECT_EQ(m.text_encoder_2_config.hidden_act, te2.at("hidden_act").get<std::string>());
  EXPECT_TRUE(m.text_encoder_2_config.with_projection);
  const auto te1 = nlohmann::json::parse(g.metadata().at("text_encoder_config"));
  EXPECT_EQ(m.text_encoder_config.num_hidden_layers, te1.at("num_hidden_layers").get<int>());
  EXPECT_EQ(m.text_encoder_config.hidden_act, te1.at("hidden_act").get<std::string>());
  const auto scheduler = nlohmann::json::parse(g.metadata().at("scheduler_config"));
  // from_single_file's EulerDiscreteScheduler config (it has no _class_name: built from a dict).
  const auto ours = nlohmann::json::parse(m.scheduler_config_json);
  EXPECT_EQ(ours.at("_class_name"), "EulerDiscreteScheduler");
  for (const char* key : {"beta_start", "beta_end", "beta_schedule", "num_train_timesteps", "prediction_type",
                          "timestep_spacing", "steps_offset", "interpolation_type"})
    EXPECT_EQ(ours.at(key), scheduler.at(key)) << key;
}

struct Case {
  std::string golden, sampler;
  int steps;
  float guidance;
};

void check(const Case& c) {
  SCOPED_TRACE(c.golden);
  const SafetensorsFile& g = testing::repo_golden("tiny-sdxl-single/" + c.golden + ".safetensors");
  ASSERT_EQ(g.metadata().at("sampler"), c.sampler);
  Txt2ImgRequest r;
  r.prompt = kPrompt;
  r.steps = c.steps;
  r.cfg_scale = c.guidance;
  r.sampler = c.sampler;
  r.seed = 42;
  r.width = r.height = 64;
  const Tensor expected = g.read_f32("latents_per_step");
  int steps_seen = 0;
  const auto result = pipeline().run(r, [&](int step, int, const Tensor& latents) {
    SCOPED_TRACE("step " + std::to_string(step));
    EXPECT_TENSOR_NEAR(latents, expected.slice0(step, step + 1).reshape({1, 4, 8, 8}), 1e-4);
    ++steps_seen;
  });
  EXPECT_EQ(steps_seen, expected.dim(0));
  const Tensor golden_image = g.read_f32("image");  // [1, H, W, 3] in [0, 1]
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
    std::printf("  %s: %.4f%% pixels exact, worst %lld/255\n", c.golden.c_str(), 100.0 * exact / golden_image.numel(),
                static_cast<long long>(worst));
}

TEST(SdxlSingleFile, EulerGuided) { check({"sdxl_euler_6steps_cfg5", "euler", 6, 5.0f}); }
TEST(SdxlSingleFile, EulerAncestralUnguided) { check({"sdxl_euler_a_4steps_cfg1", "euler_a", 4, 1.0f}); }

void expect_refused(const testing::NamedTensors& tensors, const std::string& what) {
  const std::string dir = testing::temp_dir();
  const std::string path = testing::write_tiny_sdxl(dir, true, tensors);
  try {
    open_model(path);
    ADD_FAILURE() << "opened, expected an error with: " << what;
  } catch (const ModelError& e) {
    EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
  }
}

testing::NamedTensors without(const std::string& prefix) {
  testing::NamedTensors out;
  for (auto& t : testing::tiny_sdxl_tensors())
    if (!t.first.starts_with(prefix)) out.push_back(std::move(t));
  return out;
}

TEST(SdxlSingleFile, BadFilesAreRefused) {
  expect_refused(without("conditioner.embedders.1."), "without its second text encoder");
  expect_refused(without("conditioner.embedders.0."), "without its first text encoder");
  expect_refused(without("conditioner.embedders.1.model.text_projection"), "no text_projection");
  expect_refused(without("model.diffusion_model.label_emb."), "no added embedding");
  testing::NamedTensors wrong = testing::tiny_sdxl_tensors();
  for (auto& [name, t] : wrong)
    if (name == "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight") t = Tensor({190, 64});
  expect_refused(wrong, "cannot be split into q, k and v");
  wrong = testing::tiny_sdxl_tensors();
  for (auto& [name, t] : wrong)
    if (name == "model.diffusion_model.label_emb.0.0.weight") t = Tensor({128, 2000});
  expect_refused(wrong, "added embedding takes 2000 inputs");
}

}  // namespace
}  // namespace sdcpu
