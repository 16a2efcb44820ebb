// Token merging in the pipeline (Txt2ImgRequest::tome_ratio; nets/token_merging.h) against tomesd.apply_patch on
// diffusers' StableDiffusionPipeline (tests/oracle/make_tome_goldens.py), and per request under batching.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/error.h"
#include "pipeline/txt2img.h"
#include "test_support.h"

namespace sdcpu {
namespace {

const Txt2ImgPipeline& tiny_pipeline() {
  static const Txt2ImgPipeline pipe(open_model(testing::fixture("tiny-sd")));
  return pipe;
}

Txt2ImgRequest request_of(const SafetensorsFile& g) {
  const auto& m = g.metadata();
  Txt2ImgRequest r;
  r.prompt = m.at("prompt");
  r.negative_prompt = m.at("negative_prompt");
  r.steps = std::stoi(m.at("steps"));
  r.cfg_scale = std::stof(m.at("guidance_scale"));
  r.sampler = m.at("sampler");
  r.seed = std::stoull(m.at("seed"));
  r.width = std::stoi(m.at("width"));
  r.height = std::stoi(m.at("height"));
  r.tome_ratio = std::stod(m.at("tome_ratio"));
  r.tome_max_downsample = std::stoi(m.at("tome_max_downsample"));
  return r;
}

class TomeGolden : public ::testing::TestWithParam<std::string> {};

// Free-running: every step's latents within 1e-4 of their scale, the image within 1/255.
TEST_P(TomeGolden, MatchesTomesdAroundTheRealPipeline) {
  const SafetensorsFile& g = testing::repo_golden("tome/" + GetParam());
  const Txt2ImgRequest request = request_of(g);
  const Tensor expected = g.read_f32("latents_per_step");
  int steps_seen = 0;
  const auto result = tiny_pipeline().run(request, [&](int step, int, const Tensor& latents) {
    ++steps_seen;
    SCOPED_TRACE("step " + std::to_string(step));
    EXPECT_TENSOR_NEAR(latents, expected.slice0(step, step + 1).reshape(latents.shape()), 1e-4);
  });
  EXPECT_EQ(steps_seen, expected.dim(0));
  const testing::PixelMatch pixels = testing::compare_pixels(result.image, g.read_f32("image"));
  if (std::getenv("SDCPU_TEST_VERBOSE"))
    std::printf("  image: worst %d/255, %.4f%% exact\n", pixels.worst, 100 * pixels.exact_fraction);
  EXPECT_LE(pixels.worst, 1);
  EXPECT_GE(pixels.exact_fraction, 0.99);
  // ToMe did something: without it the latents are elsewhere.
  Txt2ImgRequest plain = request;
  plain.tome_ratio = 0;
  EXPECT_GT(testing::compare(tiny_pipeline().run(plain).latents, result.latents).max_abs, 1e-3);
}

INSTANTIATE_TEST_SUITE_P(Goldens, TomeGolden,
                         ::testing::Values("pipeline_tome_r0.5_md1_dpmpp_2m_10steps_cfg7.5.safetensors",
                                           "pipeline_tome_r0.5_md1_euler_a_10steps_cfg7.5.safetensors",
                                           "pipeline_tome_r0.6_md2_dpmpp_2m_10steps_cfg7.5.safetensors"));

// Each request draws its destinations from its own generator: batched, it comes out as alone, also with step
// caching's shallow passes and when another request leaves mid-loop.
TEST(TokenMergingPipeline, BatchedRequestsComeOutAsAlone) {
  std::vector<Txt2ImgRequest> requests(3);
  const char* prompts[] = {"a red fox", "", "a lighthouse at dusk"};
  for (int k = 0; k < 3; ++k) {
    requests[k].prompt = prompts[k];
    requests[k].seed = 10 + k;
    requests[k].steps = 6;
    requests[k].width = 64;
    requests[k].height = 72;
    requests[k].tome_ratio = 0.5;
    requests[k].cache_interval = 2;
    requests[k].cache_branch = 5;
  }
  requests[2].batch_size = 2;
  const auto batched =
      tiny_pipeline().run_batch(requests, [](int r, int step, int, const Tensor&) { return !(r == 0 && step == 2); });
  EXPECT_TRUE(batched[0].latents.empty());
  for (int k = 1; k < 3; ++k) {
    SCOPED_TRACE("request " + std::to_string(k));
    EXPECT_TENSOR_NEAR(batched[k].latents, tiny_pipeline().run(requests[k]).latents, 1e-5);
  }
  Txt2ImgRequest other = requests[1];
  other.tome_ratio = 0.3;
  EXPECT_FALSE(batchable(requests[1], other));
}

TEST(TokenMergingPipeline, RatioZeroIsThePlainPipeline) {
  Txt2ImgRequest r;
  r.prompt = "a red fox";
  r.steps = 3;
  r.width = r.height = 64;
  const Tensor plain = tiny_pipeline().run(r).latents;
  r.tome_max_downsample = 8;  // ignored while the ratio is 0
  EXPECT_EQ(tiny_pipeline().run(r).latents.to_vector(), plain.to_vector());
}

TEST(TokenMergingPipeline, BadRatioIsRefused) {
  Txt2ImgRequest r;
  for (double ratio : {-0.1, 1.0, 2.0}) {
    r.tome_ratio = ratio;
    try {
      validate(r);
      ADD_FAILURE() << "ratio " << ratio << " accepted";
    } catch (const InvalidArgument& e) {
      EXPECT_EQ(e.field(), "tome_ratio");
    }
  }
  r.tome_ratio = 0.5;
  r.tome_max_downsample = 0;
  EXPECT_THROW(validate(r), InvalidArgument);
}

}  // namespace
}  // namespace sdcpu
