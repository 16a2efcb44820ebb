// Batching across requests (Txt2ImgPipeline::run_batch, Pipeline::generate_batch): requests that differ in
// prompt and seed share each step's UNet call, and each must come out as it does alone.
#include <gtest/gtest.h>

#include "core/error.h"
#include "core/image_png.h"
#include "pipeline/txt2img.h"
#include "sdcpu/sdcpu.h"
#include "test_support.h"

namespace sdcpu {
namespace {

Txt2ImgRequest request(const std::string& prompt, uint64_t seed, const std::string& sampler) {
  Txt2ImgRequest r;
  r.prompt = prompt;
  r.negative_prompt = prompt.empty() ? "" : "blurry " + prompt;
  r.sampler = sampler;
  r.steps = 4;
  r.seed = seed;
  r.width = 64;
  r.height = 72;  // not square, so a transposed latent would show
  return r;
}

// Pixels of two decoded images that differ, and by at most how much (in 1/255).
std::pair<int64_t, int> pixel_differences(const Tensor& a, const Tensor& b) {
  const std::vector<uint8_t> x = image_to_rgb8(a, 0), y = image_to_rgb8(b, 0);
  EXPECT_EQ(x.size(), y.size());
  int64_t differing = 0;
  int worst = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const int d = std::abs(int{x[i]} - int{y[i]});
    differing += d != 0;
    worst = std::max(worst, d);
  }
  return {differing, worst};
}

// Euler a draws noise at every step, DPM++ 2M keeps a history, PNDM's first steps differ from the rest: a member
// sharing a generator or a scheduler with another would show in each of them.
class BatchAcrossRequests : public ::testing::TestWithParam<std::string> {};

TEST_P(BatchAcrossRequests, EachRequestComesOutAsItDoesAlone) {
  const Txt2ImgPipeline pipe(open_model(testing::fixture("tiny-sd")));
  std::vector<Txt2ImgRequest> requests = {request("a red fox", 1, GetParam()), request("", 2, GetParam()),
                                          request("a lighthouse at dusk", 3, GetParam())};
  requests[2].batch_size = 2;  // num_images_per_prompt inside a member
  std::vector<int> steps_seen(requests.size(), 0);
  const auto batched = pipe.run_batch(requests, [&](int r, int step, int, const Tensor&) {
    EXPECT_EQ(step, steps_seen[r]++);
    return true;
  });
  ASSERT_EQ(batched.size(), requests.size());
  for (size_t r = 0; r < requests.size(); ++r) {
    SCOPED_TRACE("request " + std::to_string(r));
    const auto alone = pipe.run(requests[r]);
    EXPECT_EQ(steps_seen[r], static_cast<int>(alone.times.denoise_step_s.size()));  // PNDM: steps + 1
    // Another UNet batch size may block the kernels differently: rounding-level differences only.
    EXPECT_TENSOR_NEAR(batched[r].latents, alone.latents, 1e-5);
    ASSERT_EQ(batched[r].image.shape(), alone.image.shape());
    for (int64_t k = 0; k < alone.image.dim(0); ++k) {
      const auto [differing, worst] =
          pixel_differences(batched[r].image.slice0(k, k + 1), alone.image.slice0(k, k + 1));
      EXPECT_LE(worst, 1);
      EXPECT_LE(differing, alone.image.numel() / 1000) << "pixels off by one";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Samplers, BatchAcrossRequests, ::testing::Values("euler_a", "dpmpp_2m", "pndm"));

TEST(BatchAcrossRequests, WithoutGuidanceToo) {
  const Txt2ImgPipeline pipe(open_model(testing::fixture("tiny-sd")));
  std::vector<Txt2ImgRequest> requests = {request("a red fox", 5, "euler_a"), request("a cat", 6, "euler_a")};
  for (Txt2ImgRequest& r : requests) r.cfg_scale = 1;
  const auto batched = pipe.run_batch(requests);
  for (size_t r = 0; r < requests.size(); ++r)
    EXPECT_TENSOR_NEAR(batched[r].latents, pipe.run(requests[r]).latents, 1e-5);
}

TEST(BatchAcrossRequests, AMemberLetGoLeavesTheOthersUnchanged) {
  const Txt2ImgPipeline pipe(open_model(testing::fixture("tiny-sd")));
  const std::vector<Txt2ImgRequest> requests = {request("a red fox", 1, "euler_a"), request("a cat", 2, "euler_a"),
                                                request("a dog", 3, "euler_a")};
  int steps_of_dropped = 0;
  const auto batched = pipe.run_batch(requests, [&](int r, int step, int, const Tensor&) {
    if (r != 1) return true;
    ++steps_of_dropped;
    return step < 1;  // let go after its second step
  });
  EXPECT_EQ(steps_of_dropped, 2);
  EXPECT_TRUE(batched[1].latents.empty());
  EXPECT_TRUE(batched[1].image.empty());
  for (int r : {0, 2}) EXPECT_TENSOR_NEAR(batched[r].latents, pipe.run(requests[r]).latents, 1e-5);
}

TEST(BatchAcrossRequests, RefusesRequestsThatCannotShareAStep) {
  const Txt2ImgPipeline pipe(open_model(testing::fixture("tiny-sd")));
  const Txt2ImgRequest a = request("a", 1, "euler");
  for (auto change : std::vector<std::function<void(Txt2ImgRequest&)>>{
           [](Txt2ImgRequest& r) { r.steps = 5; }, [](Txt2ImgRequest& r) { r.cfg_scale = 5; },
           [](Txt2ImgRequest& r) { r.sampler = "lms"; }, [](Txt2ImgRequest& r) { r.timestep_spacing = "trailing"; },
           [](Txt2ImgRequest& r) { r.width = 128; }, [](Txt2ImgRequest& r) { r.height = 128; },
           [](Txt2ImgRequest& r) { r.clip_skip = 1; }}) {
    Txt2ImgRequest b = request("b", 2, "euler");
    change(b);
    EXPECT_FALSE(batchable(a, b));
    EXPECT_THROW(pipe.run_batch({a, b}), InvalidArgument);
  }
  EXPECT_TRUE(batchable(a, request("something else", 9, "euler")));
  EXPECT_THROW(pipe.run_batch({}), InvalidArgument);
  std::vector<Txt2ImgRequest> too_many(65, a);
  EXPECT_THROW(pipe.run_batch(too_many), InvalidArgument);
}

// Explicit, whatever LoadOptions' defaults: no weight cache, every network's weights in memory.
LoadOptions in_memory() {
  LoadOptions o;
  o.weight_cache_dir = "";
  o.low_memory = false;
  return o;
}

// The public API: images of every request, max_batch at a time, each the one generate() gives.
TEST(GenerateBatch, ImagesAreThoseOfGenerate) {
  auto pipe = Pipeline::load(testing::fixture("tiny-sd"), in_memory());
  std::vector<GenerateOptions> requests(3);
  const char* prompts[] = {"a red fox", "a lighthouse", ""};
  for (int j = 0; j < 3; ++j) {
    requests[j].prompt = prompts[j];
    requests[j].sampler = "euler_a";
    requests[j].steps = 3;
    requests[j].width = 64;
    requests[j].height = 64;
    requests[j].seed = 100 + 10 * j;
  }
  requests[1].batch_count = 3;  // with max_batch 2 its images span two UNet batches
  std::vector<std::vector<int>> last_step(3, std::vector<int>(3, 0));
  const auto batched = pipe->generate_batch(requests, 2, [&](int j, int k, int step, int steps) {
    EXPECT_EQ(steps, 3);
    last_step[j][k] = step;
    return true;
  });
  ASSERT_EQ(batched.size(), 3u);
  for (int j = 0; j < 3; ++j) {
    SCOPED_TRACE("request " + std::to_string(j));
    const std::vector<Image> alone = pipe->generate(requests[j]);
    ASSERT_EQ(batched[j].size(), alone.size());
    for (size_t k = 0; k < alone.size(); ++k) {
      EXPECT_EQ(last_step[j][k], 3);
      EXPECT_EQ(batched[j][k].seed, alone[k].seed);
      EXPECT_EQ(batched[j][k].parameters, alone[k].parameters);
      ASSERT_EQ(batched[j][k].rgb.size(), alone[k].rgb.size());
      int worst = 0;
      for (size_t i = 0; i < alone[k].rgb.size(); ++i)
        worst = std::max(worst, std::abs(int{batched[j][k].rgb[i]} - int{alone[k].rgb[i]}));
      EXPECT_LE(worst, 1);
    }
  }
}

TEST(GenerateBatch, AStoppedRequestReturnsNoImagesAndTheOthersGoOn) {
  auto pipe = Pipeline::load(testing::fixture("tiny-sd"), in_memory());
  std::vector<GenerateOptions> requests(2);
  for (GenerateOptions& o : requests) {
    o.prompt = "x";
    o.steps = 3;
    o.width = 64;
    o.height = 64;
    o.batch_count = 2;
  }
  requests[1].seed = 7;
  const auto batched = pipe->generate_batch(requests, 4, [](int j, int, int step, int) { return j == 0 || step < 2; });
  EXPECT_EQ(batched[0].size(), 2u);
  EXPECT_TRUE(batched[1].empty());
  EXPECT_THROW(pipe->generate_batch(requests, 0), InvalidArgument);
  EXPECT_THROW(pipe->generate_batch(requests, 65), InvalidArgument);
  requests[1].steps = 4;
  EXPECT_FALSE(batchable(requests[0], requests[1]));
  EXPECT_THROW(pipe->generate_batch(requests, 4), InvalidArgument);
}

}  // namespace
}  // namespace sdcpu
