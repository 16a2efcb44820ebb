// SD 2.x single files end to end against diffusers 0.27.2's StableDiffusionPipeline.from_single_file on the same
// file (tests/goldens/tiny-sd2, made by tests/oracle/make_sd2_single_file_goldens.py): the tokenizer's ids (SD 2.x
// pads with "!"), the OpenCLIP text encoder's output, per-step latents and the image of v-prediction and epsilon
// runs, and what `sdcpu info` says about the prediction type.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>

#include "core/image_png.h"
#include "pipeline/txt2img.h"
#include "sd2_single_file_fixture.h"
#include "sdcpu/sdcpu.h"
#include "test_support.h"

namespace sdcpu {
namespace {

const char* kPrompt = "a photo of an astronaut riding a horse on mars";

const Txt2ImgPipeline& pipeline(const std::string& yaml) {
  static std::map<std::string, std::unique_ptr<Txt2ImgPipeline>> cache;
  auto& slot = cache[yaml];
  if (!slot) slot = std::make_unique<Txt2ImgPipeline>(open_model(testing::tiny_sd2_file(yaml)));
  return *slot;
}

TEST(Sd2SingleFilePipeline, TokenIdsAndTextEncoderOutput) {
  const SafetensorsFile& g = testing::repo_golden("tiny-sd2/sd2_v_dpmpp_2m_8steps_cfg7.5.safetensors");
  const std::vector<std::vector<int>> ids = testing::input_id_rows(g);
  ASSERT_EQ(ids.size(), 2u);
  const ClipTokenizer tokenizer = ClipTokenizer::bundled("!");
  EXPECT_EQ(tokenizer.encode(""), ids[0]);
  EXPECT_EQ(tokenizer.encode(kPrompt), ids[1]);
  EXPECT_EQ(ids[1].back(), 0);  // "!" pads

  const Tensor embeddings = pipeline("v").encode_prompts({"", kPrompt}, 0);
  EXPECT_TENSOR_NEAR(embeddings, g.read_f32("text_embeddings"), 1e-4);
}

struct Case {
  std::string golden, yaml, sampler;
  int steps;
};

void check(const Case& c) {
  SCOPED_TRACE(c.golden);
  const SafetensorsFile& g = testing::repo_golden("tiny-sd2/" + c.golden + ".safetensors");
  ASSERT_EQ(g.metadata().at("sampler"), c.sampler);
  const Txt2ImgPipeline& pipe = pipeline(c.yaml);
  Txt2ImgRequest r;
  r.prompt = kPrompt;
  r.steps = c.steps;
  r.cfg_scale = 7.5f;
  r.sampler = c.sampler;
  r.seed = 42;
  r.width = r.height = 64;
  const Tensor expected = g.read_f32("latents_per_step");
  const Shape latent_shape = {1, 4, 8, 8};
  int steps_seen = 0;
  const auto result = pipe.run(r, [&](int step, int, const Tensor& latents) {
    SCOPED_TRACE("step " + std::to_string(step));
    EXPECT_TENSOR_NEAR(latents, expected.slice0(step, step + 1).reshape(latent_shape), 1e-4);
    ++steps_seen;
  });
  EXPECT_EQ(steps_seen, expected.dim(0));

  const Tensor golden_image = g.read_f32("image");  // [1, H, W, 3] in [0, 1]
  const std::vector<uint8_t> ours = image_to_rgb8(result.image, 0);
  ASSERT_EQ(static_cast<int64_t>(ours.size()), golden_image.numel());
  int64_t exact = 0, worst = 0;
  for (int64_t i = 0; i < golden_image.numel(); ++i) {
    const int64_t want = static_cast<int64_t>(std::nearbyint(golden_image[i] * 255.0f));
    const int64_t diff = std::llabs(want - ours[i]);
    worst = std::max(worst, diff);
    exact += diff == 0;
  }
  EXPECT_LE(worst, 1);
  EXPECT_GE(static_cast<double>(exact) / golden_image.numel(), 0.99);
  if (std::getenv("SDCPU_TEST_VERBOSE"))
    std::printf("  %s: %.4f%% pixels exact, worst %lld/255\n", c.golden.c_str(), 100.0 * exact / golden_image.numel(),
                static_cast<long long>(worst));
}

TEST(Sd2SingleFilePipeline, VPredictionEuler) { check({"sd2_v_euler_6steps_cfg7.5", "v", "euler", 6}); }
TEST(Sd2SingleFilePipeline, VPredictionDpmpp2m) { check({"sd2_v_dpmpp_2m_8steps_cfg7.5", "v", "dpmpp_2m", 8}); }
TEST(Sd2SingleFilePipeline, EpsilonDpmpp2m) { check({"sd2_eps_dpmpp_2m_8steps_cfg7.5", "eps", "dpmpp_2m", 8}); }

TEST(Sd2SingleFilePipeline, InfoSaysTheArchitectureAndWhyThisPredictionType) {
  std::string text = Pipeline::load(testing::tiny_sd2_file("v"))->describe();
  EXPECT_NE(text.find("architecture: SD 2.x\n"), std::string::npos) << text;
  EXPECT_NE(text.find("prediction:   v_prediction (tiny-sd2.yaml says parameterization: \"v\")\n"), std::string::npos)
      << text;
  EXPECT_NE(text.find("text encoder: OpenCLIP, 2 layers, hidden 64, 1 heads, gelu\n"), std::string::npos) << text;
  EXPECT_NE(text.find("pad token \"!\""), std::string::npos) << text;

  LoadOptions options;
  options.prediction_type = "epsilon";
  text = Pipeline::load(testing::tiny_sd2_file("v"), options)->describe();
  EXPECT_NE(text.find("prediction:   epsilon (--prediction-type (the original config would give v_prediction))\n"),
            std::string::npos)
      << text;
  text = Pipeline::load(testing::tiny_sd2_file("eps"))->describe();
  EXPECT_NE(text.find("prediction:   epsilon (tiny-sd2.yaml has no parameterization: \"v\")\n"), std::string::npos)
      << text;
}

}  // namespace
}  // namespace sdcpu
