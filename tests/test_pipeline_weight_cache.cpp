// The pipeline with a weight cache directory (pipeline/weight_cache.h) and with low_memory: the same latents, bit
// for bit, as without either, whether the cache files are being written, read back, stale, damaged or cannot be
// written at all.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "formats/model_files.h"
#include "kernels/cpu_features.h"
#include "pipeline/txt2img.h"
#include "pipeline/weight_cache.h"
#include "test_support.h"

namespace sdcpu {
namespace {

namespace fs = std::filesystem;

Txt2ImgRequest small_request() {
  Txt2ImgRequest r;
  r.prompt = "a photo of an astronaut riding a horse on mars";
  r.negative_prompt = "blurry";
  r.steps = 3;
  r.seed = 7;
  r.width = r.height = 64;
  return r;
}

Tensor latents_of(const std::string& model, ComputeType compute, MemoryOptions memory = {},
                  std::vector<WeightCacheStatus>* status = nullptr) {
  Txt2ImgPipeline pipe(open_model(testing::fixture(model)), compute, std::move(memory));
  if (status) *status = pipe.weight_cache_status();
  const Tensor first = pipe.run(small_request()).latents;
  // A second image from the same pipeline: its networks map their weights again after dropping them.
  EXPECT_EQ(testing::compare(pipe.run(small_request()).latents, first).max_abs, 0.0);
  return first;
}

void expect_outcomes(const std::vector<WeightCacheStatus>& status, const std::string& outcome,
                     const std::string& previous) {
  ASSERT_EQ(status.size(), 3u);
  for (const auto& s : status) {
    SCOPED_TRACE(s.component);
    EXPECT_EQ(s.outcome, outcome);
    EXPECT_EQ(s.previous_state.substr(0, previous.size()), previous) << s.previous_state;
  }
}

class WeightCache : public ::testing::TestWithParam<const char*> {};

TEST_P(WeightCache, WrittenThenLoadedGiveTheSameLatentsAsNoCache) {
  const std::string model = GetParam();
  for (ComputeType compute : {ComputeType::f32, ComputeType::bf16}) {
    if (compute == ComputeType::bf16 && !cpu_has_native_bf16()) continue;
    SCOPED_TRACE(compute_type_name(compute));
    const std::string dir = testing::temp_dir() + "/cache";
    const Tensor expected = latents_of(model, compute);
    std::vector<WeightCacheStatus> status;
    EXPECT_EQ(testing::compare(latents_of(model, compute, {dir, false}, &status), expected).max_abs, 0.0);
    expect_outcomes(status, "written", "missing");
    for (const auto& s : status) EXPECT_TRUE(fs::is_regular_file(s.path)) << s.path;
    EXPECT_EQ(testing::compare(latents_of(model, compute, {dir, true}, &status), expected).max_abs, 0.0);
    expect_outcomes(status, "loaded", "valid");
    // Nothing but the three files (no temporary left behind).
    EXPECT_EQ(std::distance(fs::directory_iterator(dir), fs::directory_iterator()), 3);
  }
}

INSTANTIATE_TEST_SUITE_P(Layouts, WeightCache, ::testing::Values("tiny-sd", "tiny-sd.safetensors"));

TEST(WeightCacheFiles, DamagedOrForeignFilesAreRewritten) {
  const std::string dir = testing::temp_dir() + "/cache";
  const Tensor expected = latents_of("tiny-sd", ComputeType::f32);
  std::vector<WeightCacheStatus> status;
  latents_of("tiny-sd", ComputeType::f32, {dir, false}, &status);
  ASSERT_EQ(status.size(), 3u);
  // The text encoder's file truncated, the UNet's replaced by the VAE's (another fingerprint), the VAE's garbage.
  fs::resize_file(status[0].path, fs::file_size(status[0].path) / 2);
  fs::copy_file(status[2].path, status[1].path, fs::copy_options::overwrite_existing);
  std::ofstream(status[2].path, std::ios::trunc) << "not a cache";
  std::vector<WeightCacheStatus> again;
  EXPECT_EQ(testing::compare(latents_of("tiny-sd", ComputeType::f32, {dir, false}, &again), expected).max_abs, 0.0);
  ASSERT_EQ(again.size(), 3u);
  EXPECT_EQ(again[0].previous_state.rfind("damaged", 0), 0u) << again[0].previous_state;
  EXPECT_EQ(again[1].previous_state, "stale");
  EXPECT_EQ(again[2].previous_state.rfind("damaged", 0), 0u) << again[2].previous_state;
  for (const auto& s : again) EXPECT_EQ(s.outcome, "written");
  latents_of("tiny-sd", ComputeType::f32, {dir, false}, &again);
  expect_outcomes(again, "loaded", "valid");
}

TEST(WeightCacheFiles, AnUnwritableDirectoryLeavesTheNetworksWorking) {
  const std::string not_a_dir = testing::temp_dir() + "/file";
  std::ofstream(not_a_dir) << "x";
  const Tensor expected = latents_of("tiny-sd", ComputeType::f32);
  std::vector<WeightCacheStatus> status;
  EXPECT_EQ(testing::compare(latents_of("tiny-sd", ComputeType::f32, {not_a_dir, false}, &status), expected).max_abs,
            0.0);
  ASSERT_EQ(status.size(), 3u);
  for (const auto& s : status) EXPECT_EQ(s.outcome.rfind("not written: ", 0), 0u) << s.outcome;
}

TEST(WeightCacheFiles, TheFileNameFollowsTheModelFileAndThePrecision) {
  const std::string dir = testing::temp_dir();
  const std::string copy = dir + "/model.safetensors";
  fs::copy_file(testing::fixture("tiny-sd.safetensors"), copy);
  const ModelFiles files = open_model(copy);
  auto path = [&](const WeightStore& store, ComputeType compute) {
    return weight_cache_path(dir, store, compute, weight_cache_fingerprint(store, compute));
  };
  const std::string fp32 = path(*files.unet, ComputeType::f32);
  EXPECT_NE(fp32, path(*files.unet, ComputeType::bf16));
  EXPECT_NE(fp32, path(*files.vae, ComputeType::f32));
  EXPECT_EQ(fs::path(fp32).filename().string().rfind("unet-fp32-", 0), 0u) << fp32;
  // A rewritten model file (new modification time) must not find the old cache.
  fs::last_write_time(copy, fs::last_write_time(copy) + std::chrono::seconds(5));
  EXPECT_NE(path(*open_model(copy).unet, ComputeType::f32), fp32);
}

TEST(LowMemory, GivesTheSameLatents) {
  const Tensor expected = latents_of("tiny-sd", ComputeType::f32);
  EXPECT_EQ(testing::compare(latents_of("tiny-sd", ComputeType::f32, {"", true}), expected).max_abs, 0.0);
}

}  // namespace
}  // namespace sdcpu
