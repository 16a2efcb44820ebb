// Step caching (DeepCache; nets/unet.h UNetStepCache): the UNet's shallow passes against the full one, and whole
// pipeline runs against the DeepCache authors' own DeepCacheSDHelper around diffusers' StableDiffusionPipeline
// (tests/oracle/make_deepcache_goldens.py).
#include <gtest/gtest.h>

#include "core/error.h"
#include "golden_request.h"
#include "pipeline/txt2img.h"
#include "test_support.h"

namespace sdcpu {
namespace {

const Txt2ImgPipeline& tiny_pipeline() {
  static const Txt2ImgPipeline pipe(open_model(testing::fixture("tiny-sd")));
  return pipe;
}

const UNet2DConditionModel& tiny_unet() {
  static const ModelFiles files = open_model(testing::fixture("tiny-sd"));
  static const UNet2DConditionModel unet(files.unet_config, *files.unet);
  return unet;
}

// The UNet golden's inputs: [2, 4, 16, 16] latents, t = 500, [uncond, cond] embeddings.
struct UNetInputs {
  Tensor sample, encoder_hidden_states;
  float timestep;
};
UNetInputs unet_inputs() {
  const SafetensorsFile& g = testing::golden("tiny-sd/unet.safetensors");
  // The timestep is stored as int64, as the schedulers' are (test_nets_unet.cpp).
  return {g.read_f32("sample"), g.read_f32("encoder_hidden_states"), static_cast<float>(g.read_i64("timestep")[0])};
}

TEST(StepCache, TinyUNetHasSixBranches) {
  EXPECT_EQ(tiny_unet().deep_cache_branches(), 6);  // 2 levels x (2 layers + the downsampler's place)
}

// Shallow passes rebuild the full pass from the features it kept: on the same inputs they must give the same result,
// at every branch. A layer run twice, skipped, or fed the wrong skip connection would show.
TEST(StepCache, ShallowPassOnTheSameInputsEqualsTheFullPassAtEveryBranch) {
  const UNetInputs in = unet_inputs();
  const Tensor full = tiny_unet().forward(in.sample, in.timestep, in.encoder_hidden_states);
  for (int branch = 0; branch < tiny_unet().deep_cache_branches(); ++branch) {
    SCOPED_TRACE("branch " + std::to_string(branch));
    UNetStepCache cache{branch, Tensor()};
    const Tensor caching = tiny_unet().forward_and_cache(in.sample, in.timestep, in.encoder_hidden_states, cache);
    EXPECT_EQ(caching.to_vector(), full.to_vector());
    ASSERT_EQ(cache.deep_features.ndim(), 4);
    EXPECT_EQ(cache.deep_features.dim(0), 2);
    const Tensor shallow = tiny_unet().forward_shallow(in.sample, in.timestep, in.encoder_hidden_states, cache);
    EXPECT_EQ(shallow.to_vector(), full.to_vector());
  }
}

// On other inputs a shallow pass differs from the full one (it must reuse stale features, else it saves nothing),
// and the deeper the branch, the more it recomputes and the closer it stays.
TEST(StepCache, ShallowPassReusesTheStaleDeepFeatures) {
  const UNetInputs in = unet_inputs();
  Tensor moved = in.sample.clone();
  for (int64_t i = 0; i < moved.numel(); ++i) moved[i] *= 0.9f;
  const Tensor full = tiny_unet().forward(moved, 400.0f, in.encoder_hidden_states);
  double previous_error = 1e30;
  for (int branch : {0, 2, 4, 5}) {
    SCOPED_TRACE("branch " + std::to_string(branch));
    UNetStepCache cache{branch, Tensor()};
    tiny_unet().forward_and_cache(in.sample, in.timestep, in.encoder_hidden_states, cache);
    const Tensor shallow = tiny_unet().forward_shallow(moved, 400.0f, in.encoder_hidden_states, cache);
    const double error = testing::compare(shallow, full).max_abs;
    if (std::getenv("SDCPU_TEST_VERBOSE")) std::printf("  branch %d: max abs error %.4g\n", branch, error);
    EXPECT_GT(error, 1e-4);
    EXPECT_LT(error, previous_error);
    previous_error = error;
  }
}

TEST(StepCache, BadUseIsRefused) {
  const UNetInputs in = unet_inputs();
  UNetStepCache missing{0, Tensor()};
  EXPECT_THROW(tiny_unet().forward_shallow(in.sample, in.timestep, in.encoder_hidden_states, missing), InvalidArgument);
  UNetStepCache past{6, Tensor()};
  EXPECT_THROW(tiny_unet().forward_and_cache(in.sample, in.timestep, in.encoder_hidden_states, past), InvalidArgument);
  UNetStepCache negative{-1, Tensor()};
  EXPECT_THROW(tiny_unet().forward_and_cache(in.sample, in.timestep, in.encoder_hidden_states, negative),
               InvalidArgument);
  // Features of another batch.
  UNetStepCache cache{0, Tensor()};
  tiny_unet().forward_and_cache(in.sample, in.timestep, in.encoder_hidden_states, cache);
  EXPECT_THROW(
      tiny_unet().forward_shallow(in.sample.slice0(0, 1), in.timestep, in.encoder_hidden_states.slice0(0, 1), cache),
      InvalidArgument);

  Txt2ImgRequest r;
  r.cache_interval = 0;
  try {
    validate(r);
    ADD_FAILURE() << "interval 0 accepted";
  } catch (const InvalidArgument& e) {
    EXPECT_EQ(e.field(), "cache_interval");
  }
  r.cache_interval = 3;
  r.cache_branch = -1;
  EXPECT_THROW(validate(r), InvalidArgument);
  r.cache_branch = 6;  // valid in general, past the tiny UNet's branches
  r.width = r.height = 64;
  r.steps = 2;
  try {
    tiny_pipeline().run(r);
    ADD_FAILURE() << "branch 6 accepted";
  } catch (const InvalidArgument& e) {
    EXPECT_EQ(e.field(), "cache_branch");
    EXPECT_NE(std::string(e.what()).find("between 0 and 5"), std::string::npos) << e.what();
  }
}

Txt2ImgRequest request_of(const SafetensorsFile& g) {
  Txt2ImgRequest r = testing::golden_request(g, "sampler");
  r.cache_interval = std::stoi(g.metadata().at("cache_interval"));
  r.cache_branch = std::stoi(g.metadata().at("cache_branch_id"));
  return r;
}

class DeepCacheGolden : public ::testing::TestWithParam<std::string> {};

// Free-running, as the sampler goldens: every step's latents within 1e-4 of their scale, the image within 1/255.
TEST_P(DeepCacheGolden, MatchesDeepCacheSDHelperAroundTheRealPipeline) {
  const SafetensorsFile& g = testing::repo_golden("tiny-sd/" + GetParam());
  const Txt2ImgRequest request = request_of(g);
  ASSERT_GT(request.cache_interval, 1);
  const Tensor expected = g.read_f32("latents_per_step");
  const Tensor full_step = g.read_f32("full_step");
  ASSERT_EQ(full_step.numel(), request.steps);
  const std::vector<bool> full = full_unet_passes(step_cache_schedule(request), request.steps);
  for (int i = 0; i < request.steps; ++i) EXPECT_EQ(full[i], full_step[i] == 1.0f) << "step " << i;

  int steps_seen = 0;
  const auto result = tiny_pipeline().run(request, [&](int step, int, const Tensor& latents) {
    SCOPED_TRACE("step " + std::to_string(step));
    ASSERT_LT(step, expected.dim(0));
    EXPECT_TENSOR_NEAR(latents, expected.slice0(step, step + 1).reshape(latents.shape()), 1e-4);
    ++steps_seen;
  });
  EXPECT_EQ(steps_seen, expected.dim(0));
  const testing::PixelMatch pixels = testing::compare_pixels(result.image, g.read_f32("image"));
  EXPECT_LE(pixels.worst, 1);
  EXPECT_GE(pixels.exact_fraction, 0.99);
  if (std::getenv("SDCPU_TEST_VERBOSE"))
    std::printf("  %s: %.4f%% pixels exact, worst %d/255\n", GetParam().c_str(), 100.0 * pixels.exact_fraction,
                pixels.worst);

  // And it is not the uncached image: caching changed something the golden pins down.
  Txt2ImgRequest uncached = request;
  uncached.cache_interval = 1;
  EXPECT_GT(testing::compare(tiny_pipeline().run(uncached).latents, result.latents).max_abs, 1e-3);
}

INSTANTIATE_TEST_SUITE_P(Runs, DeepCacheGolden,
                         ::testing::Values("deepcache_dpmpp_2m_interval3_branch0_10steps_cfg7.5.safetensors",
                                           "deepcache_dpmpp_2m_interval2_branch1_10steps_cfg7.5.safetensors",
                                           "deepcache_euler_a_interval3_branch0_10steps_cfg7.5.safetensors"));

// Interval 1 is the plain pipeline, exactly.
TEST(StepCache, IntervalOneIsThePlainPipeline) {
  Txt2ImgRequest r =
      request_of(testing::repo_golden("tiny-sd/deepcache_dpmpp_2m_interval3_branch0_10steps_cfg7.5.safetensors"));
  r.cache_interval = 1;
  const Tensor plain = tiny_pipeline().run(r).latents;
  const SafetensorsFile& g = testing::golden("tiny-sd/pipeline_dpmpp_2m_10steps_cfg7.5_folder_scheduler.safetensors");
  const Tensor golden_last = g.read_f32("latents_per_step").slice0(9, 10).reshape(plain.shape());
  EXPECT_TENSOR_NEAR(plain, golden_last, 1e-4);
}

// The quadratic schedule changes which steps run in full, nothing else: two schedules with the same full steps give
// the same latents, and the quadratic one differs from the uniform one when its full steps do.
TEST(StepCache, QuadraticScheduleRunsItsFullSteps) {
  Txt2ImgRequest r;
  r.prompt = "a red fox";
  r.width = r.height = 64;
  r.steps = 10;
  r.cache_interval = 3;
  r.cache_branch = 1;
  r.cache_schedule = "quadratic";
  r.cache_center = 0;  // 10 steps, 4 full: sample_from_quad_center(10, 4, 0, 1.4) = 0, 1, 3, 6 -- not 0, 3, 6, 9
  const std::vector<bool> full = full_unet_passes(step_cache_schedule(r), 10);
  EXPECT_EQ(full, (std::vector<bool>{true, true, false, true, false, false, true, false, false, false}));
  const Tensor quadratic = tiny_pipeline().run(r).latents;
  Txt2ImgRequest uniform = r;
  uniform.cache_schedule = "uniform";
  EXPECT_GT(testing::compare(tiny_pipeline().run(uniform).latents, quadratic).max_abs, 1e-3);
  r.cache_interval = 2;  // 10 steps, 5 full around the middle: no power fits
  r.cache_center = 5;
  EXPECT_THROW(tiny_pipeline().run(r), InvalidArgument);
}

// Batched requests share one step cache; each must come out as it does alone, also when one leaves mid-loop and
// the cached deep features lose its rows.
TEST(StepCache, BatchedRequestsComeOutAsAlone) {
  std::vector<Txt2ImgRequest> requests(3);
  const char* prompts[] = {"a red fox", "", "a lighthouse at dusk"};
  for (int k = 0; k < 3; ++k) {
    requests[k].prompt = prompts[k];
    requests[k].seed = 10 + k;
    requests[k].steps = 7;
    requests[k].width = 64;
    requests[k].height = 72;
    requests[k].sampler = "dpmpp_2m";
    requests[k].cache_interval = 3;
    requests[k].cache_branch = 1;
  }
  requests[2].batch_size = 2;
  // Request 0 leaves after step 3 (a shallow step follows, which must use the others' rows of the features).
  const auto batched =
      tiny_pipeline().run_batch(requests, [](int r, int step, int, const Tensor&) { return !(r == 0 && step == 3); });
  EXPECT_TRUE(batched[0].latents.empty());
  for (int k = 1; k < 3; ++k) {
    SCOPED_TRACE("request " + std::to_string(k));
    EXPECT_TENSOR_NEAR(batched[k].latents, tiny_pipeline().run(requests[k]).latents, 1e-5);
  }
  Txt2ImgRequest other = requests[1];
  other.cache_branch = 0;
  EXPECT_FALSE(batchable(requests[1], other));
}

}  // namespace
}  // namespace sdcpu
