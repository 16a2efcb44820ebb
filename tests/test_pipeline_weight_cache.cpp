// The pipeline with a weight cache directory (pipeline/weight_cache.h) and with low_memory: the same latents, bit
// for bit, as without either, whether the cache files are being written, read back, stale, damaged or cannot be
// written at all.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>

#include "formats/model_files.h"
#include "kernels/cpu_features.h"
#include "pipeline/txt2img.h"
#include "pipeline/weight_cache.h"
#include "sdcpu/sdcpu.h"
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
  for (ComputeType compute : {ComputeType::f32, ComputeType::bf16, ComputeType::int8}) {
    if (compute != ComputeType::f32 && !cpu_has_native_bf16()) continue;
    if (compute == ComputeType::int8 && !cpu_has_native_int8()) continue;
    SCOPED_TRACE(compute_type_name(compute));
    // int8: the UNet's file also holds every weight's scales; the text encoder's and the VAE's are bf16 files.
    const std::string dir = testing::temp_dir() + "/cache-" + compute_type_name(compute);
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

// A cache file that can be streamed but not put in place (a directory stands at its path, so the rename fails):
// the weights that went only to the unfinished file are packed again, and the images stay the same.
TEST(WeightCacheFiles, AStreamThatCannotBeFinishedLeavesTheNetworksWorking) {
  const std::string dir = testing::temp_dir() + "/cache";
  const Tensor expected = latents_of("tiny-sd", ComputeType::f32);
  const ModelFiles files = open_model(testing::fixture("tiny-sd"));
  for (const WeightStore* store : {files.text_encoder.get(), files.unet.get(), files.vae.get()})
    fs::create_directories(
        fs::path(weight_cache_path(dir, *store, ComputeType::f32, weight_cache_fingerprint(*store, ComputeType::f32))) /
        "occupied");
  std::vector<WeightCacheStatus> status;
  EXPECT_EQ(testing::compare(latents_of("tiny-sd", ComputeType::f32, {dir, true}, &status), expected).max_abs, 0.0);
  ASSERT_EQ(status.size(), 3u);
  for (const auto& s : status) EXPECT_EQ(s.outcome.rfind("not written: cannot rename", 0), 0u) << s.outcome;
  for (const auto& entry : fs::directory_iterator(dir))
    EXPECT_TRUE(entry.is_directory()) << "left behind: " << entry.path();
}

// Sets an environment variable (or unsets it: nullptr) for the life of this object.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value)
      ::setenv(name, value, 1);
    else
      ::unsetenv(name);
  }
  ~ScopedEnv() {
    if (old_)
      ::setenv(name_.c_str(), old_->c_str(), 1);
    else
      ::unsetenv(name_.c_str());
  }

 private:
  std::string name_;
  std::optional<std::string> old_;
};

TEST(DefaultWeightCacheDir, FollowsTheEnvironment) {
  ScopedEnv home("HOME", "/home/someone");
  {
    ScopedEnv sdcpu("SDCPU_WEIGHT_CACHE", "/data/weights");
    ScopedEnv xdg("XDG_CACHE_HOME", "/xdg");
    EXPECT_EQ(default_weight_cache_dir(), "/data/weights");
    EXPECT_EQ(LoadOptions().weight_cache_dir, "/data/weights");
    EXPECT_EQ(BenchOptions().weight_cache_dir, "/data/weights");
  }
  {
    ScopedEnv sdcpu("SDCPU_WEIGHT_CACHE", "");  // set but empty: no cache
    EXPECT_EQ(default_weight_cache_dir(), "");
  }
  ScopedEnv sdcpu("SDCPU_WEIGHT_CACHE", nullptr);
  {
    ScopedEnv xdg("XDG_CACHE_HOME", "/xdg");
    EXPECT_EQ(default_weight_cache_dir(), "/xdg/sdcpu/weights");
  }
  for (const char* ignored : {"", "relative/path"}) {  // the XDG spec: only an absolute path counts
    ScopedEnv xdg("XDG_CACHE_HOME", ignored);
    EXPECT_EQ(default_weight_cache_dir(), "/home/someone/.cache/sdcpu/weights");
  }
  ScopedEnv xdg("XDG_CACHE_HOME", nullptr);
  EXPECT_EQ(default_weight_cache_dir(), "/home/someone/.cache/sdcpu/weights");
  ScopedEnv no_home("HOME", nullptr);
  EXPECT_EQ(default_weight_cache_dir(), "");
  EXPECT_TRUE(LoadOptions().low_memory) << "lean is the default";
  EXPECT_TRUE(BenchOptions().low_memory);
}

// The public API with its defaults (a weight cache in the default directory, lean memory): the first load writes
// the cache, the second maps it, and both give diffusers' image (tests/oracle/make_pipeline_goldens.py: the real
// StableDiffusionPipeline call) within 1/255.
TEST(DefaultWeightCacheDir, TheDefaultsWriteThenLoadTheCacheAndMatchTheGolden) {
  const std::string xdg_dir = testing::temp_dir() + "/xdg";
  ScopedEnv sdcpu("SDCPU_WEIGHT_CACHE", nullptr);
  ScopedEnv xdg("XDG_CACHE_HOME", xdg_dir.c_str());
  const std::string cache_dir = xdg_dir + "/sdcpu/weights";
  SafetensorsFile& g =
      testing::repo_golden("tiny-sd/pipeline_euler_a_10steps_cfg7.5_folder_scheduler_pipeline_call.safetensors");
  const Tensor golden_image = g.read_f32("image");  // [1, H, W, 3] in [0, 1]
  GenerateOptions o;
  o.prompt = g.metadata().at("prompt");
  o.sampler = "euler_a";
  o.steps = 10;
  o.cfg_scale = 7.5f;
  o.seed = 42;
  o.width = o.height = 128;
  for (const char* start : {"first", "second"}) {
    SCOPED_TRACE(start);
    std::vector<std::string> notices;
    LoadOptions load;
    EXPECT_EQ(load.weight_cache_dir, cache_dir);
    load.on_notice = [&](const std::string& n) { notices.push_back(n); };
    auto pipe = Pipeline::load(testing::fixture("tiny-sd"), load);
    EXPECT_TRUE(notices.empty());
    const std::string described = pipe->describe();
    EXPECT_NE(described.find(std::string("weight cache: unet ") + (start[0] == 'f' ? "written" : "loaded")),
              std::string::npos)
        << described;
    const std::vector<Image> images = pipe->generate(o);
    ASSERT_EQ(images.size(), 1u);
    ASSERT_EQ(static_cast<int64_t>(images[0].rgb.size()), golden_image.numel());
    int64_t worst = 0;
    for (int64_t i = 0; i < golden_image.numel(); ++i)
      worst = std::max<int64_t>(
          worst, std::llabs(static_cast<int64_t>(std::nearbyint(golden_image[i] * 255.0f)) - images[0].rgb[i]));
    EXPECT_LE(worst, 1);
  }
  EXPECT_EQ(std::distance(fs::directory_iterator(cache_dir), fs::directory_iterator()), 3);
}

// A default directory that cannot be written: generation goes on without a cache, and says so once.
TEST(DefaultWeightCacheDir, AnUnwritableDefaultFallsBackAndSaysSoOnce) {
  const std::string not_a_dir = testing::temp_dir() + "/file";
  std::ofstream(not_a_dir) << "x";
  ScopedEnv sdcpu("SDCPU_WEIGHT_CACHE", (not_a_dir + "/weights").c_str());
  std::vector<std::string> notices;
  LoadOptions load;
  load.on_notice = [&](const std::string& n) { notices.push_back(n); };
  auto pipe = Pipeline::load(testing::fixture("tiny-sd"), load);
  ASSERT_EQ(notices.size(), 1u);
  EXPECT_NE(notices[0].find("weight cache not written"), std::string::npos) << notices[0];
  EXPECT_NE(notices[0].find("text_encoder, unet, vae"), std::string::npos) << notices[0];
  GenerateOptions o;
  o.prompt = "a red cube";
  o.steps = 2;
  o.width = o.height = 64;
  EXPECT_EQ(pipe->generate(o).size(), 1u);
}

}  // namespace
}  // namespace sdcpu
