// The quality metrics of `sdcpu bench --quality` against scikit-image's own (tests/oracle/make_quality_goldens.py),
// and the quality bench itself on the tiny model.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "kernels/cpu_features.h"
#include "pipeline/image_quality.h"
#include "sdcpu/sdcpu.h"
#include "test_support.h"

namespace sdcpu {
namespace {

Tensor tensor_from(const nlohmann::json& values, const Shape& shape) {
  Tensor t(shape);
  EXPECT_EQ(static_cast<int64_t>(values.size()), t.numel());
  for (int64_t i = 0; i < t.numel(); ++i) t[i] = values[i].get<float>();
  return t;
}

TEST(ImageQuality, PsnrAndSsimMatchScikitImage) {
  const auto golden = nlohmann::json::parse(testing::read_text(SDCPU_SOURCE_DIR "/tests/goldens/quality/metrics.json"));
  const Shape shape = golden.at("shape").get<Shape>();
  const Tensor reference = tensor_from(golden.at("reference"), shape);
  for (const auto& c : golden.at("cases")) {
    SCOPED_TRACE(c.at("name").get<std::string>());
    const Tensor image = tensor_from(c.at("image"), shape);
    // Double-precision sums over a few thousand values: agreement to 1e-9 relative is expected, 1e-6 is a bound.
    EXPECT_NEAR(image_psnr_db(image, reference), c.at("psnr_db").get<double>(), 1e-6 * c.at("psnr_db").get<double>());
    EXPECT_NEAR(image_ssim(image, reference), c.at("ssim").get<double>(), 1e-6);
  }
  EXPECT_EQ(image_psnr_db(reference, reference), INFINITY);
  EXPECT_NEAR(image_ssim(reference, reference), 1.0, 1e-12);
}

TEST(ImageQuality, ConstantImagesFollowTheFormula) {
  // Two flat images 0.5 and 0.6 as displayed: no variance, so SSIM is its luminance term alone,
  // (2 * 0.5 * 0.6 + C1) / (0.25 + 0.36 + C1) with C1 = 1e-4; PSNR is 10 log10(1 / 0.01) = 20 dB.
  Tensor a({1, 3, 12, 12}), b({1, 3, 12, 12});
  for (int64_t i = 0; i < a.numel(); ++i) {
    a[i] = 0.0f;  // displayed 0.5
    b[i] = 0.2f;  // displayed 0.6
  }
  EXPECT_NEAR(image_ssim(a, b), (0.6 + 1e-4) / (0.61 + 1e-4), 1e-7);
  EXPECT_NEAR(image_psnr_db(a, b), 20.0, 1e-5);
  // Values beyond [-1, 1] are clamped as an image shows them.
  for (int64_t i = 0; i < a.numel(); ++i) a[i] = 3.0f, b[i] = 1.0f;
  EXPECT_EQ(image_psnr_db(a, b), INFINITY);
}

TEST(ImageQuality, RefusesShapesItCannotCompare) {
  EXPECT_THROW(image_psnr_db(Tensor({1, 3, 16, 16}), Tensor({1, 3, 16, 8})), InvalidArgument);
  EXPECT_THROW(image_ssim(Tensor({1, 3, 10, 16}), Tensor({1, 3, 10, 16})), InvalidArgument);  // below the window
  EXPECT_THROW(image_ssim(Tensor({1, 4, 16, 16}), Tensor({1, 4, 16, 16})), InvalidArgument);
  EXPECT_THROW(latent_error(Tensor({1, 4, 8, 8}), Tensor({1, 4, 8, 9})), InvalidArgument);
}

TEST(ImageQuality, LatentErrorIsRelativeToTheReference) {
  Tensor a({1, 4, 2, 2}), b({1, 4, 2, 2});
  for (int64_t i = 0; i < a.numel(); ++i) {
    b[i] = 2.0f;
    a[i] = i == 3 ? 2.5f : 2.0f;
  }
  const LatentError e = latent_error(a, b);
  EXPECT_NEAR(e.max_abs, 0.5, 1e-12);
  EXPECT_NEAR(e.rel_rms, std::sqrt(0.25 / 16) / 2.0, 1e-12);
}

TEST(QualityBench, ComparesEveryModeWithTheFp32Reference) {
  QualityBenchOptions o;
  o.model_path = testing::fixture("tiny-sd");
  o.weight_cache_dir = "";  // explicit, whatever the defaults: no cache, all weights in memory
  o.low_memory = false;
  o.width = 64;
  o.height = 64;
  o.steps = 3;
  o.prompts = 2;
  o.modes = {"fp32", "fp32+cache2+branch1"};
  if (cpu_has_native_bf16()) o.modes.push_back("bf16");
  const BenchResult r = bench_quality(o);
  const auto j = nlohmann::json::parse(r.json);
  EXPECT_EQ(j.at("prompts"), 2);
  ASSERT_EQ(j.at("modes").size(), o.modes.size());
  // fp32 against itself: the same images (the pipeline is deterministic), so PSNR is null (infinite) and SSIM 1.
  const auto& fp32 = j.at("modes")[0];
  EXPECT_EQ(fp32.at("mode"), "fp32");
  EXPECT_TRUE(fp32.at("psnr_db").at("mean").is_null());
  EXPECT_DOUBLE_EQ(fp32.at("ssim").at("min").get<double>(), 1.0);
  EXPECT_EQ(fp32.at("latent_max_abs").get<double>(), 0.0);
  ASSERT_EQ(fp32.at("per_prompt").size(), 2u);
  EXPECT_EQ(fp32.at("per_prompt")[1].at("seed"), 1002);
  // Step caching: the same precision, another computation (step 1 of 3 is shallow): close, not equal.
  const auto& cached = j.at("modes")[1];
  EXPECT_EQ(cached.at("mode"), "fp32+cache2+branch1");
  EXPECT_GT(cached.at("psnr_db").at("min").get<double>(), 20.0);
  EXPECT_GT(cached.at("latent_max_abs").get<double>(), 0.0);
  if (o.modes.size() == 3) {
    // bf16 on the tiny model: close (about 55 dB here) but not equal.
    const auto& bf16 = j.at("modes")[2];
    EXPECT_GT(bf16.at("psnr_db").at("min").get<double>(), 35.0);
    EXPECT_LT(bf16.at("psnr_db").at("min").get<double>(), 100.0);
    EXPECT_GT(bf16.at("latent_rel_rms_mean").get<double>(), 0.0);
  }
  EXPECT_NE(r.table.find("fp32 (reference)"), std::string::npos);
}

TEST(QualityBench, RefusesBadOptionsBeforeLoading) {
  QualityBenchOptions o;
  o.model_path = "/nonexistent";
  o.modes = {"fp16"};
  EXPECT_THROW(bench_quality(o), InvalidArgument);
  for (const char* bad : {"fp32+cache0", "fp32+cache", "fp32+branch1", "fp32+cache3+cache3", "fp32+tome",
                          "fp32+quadratic", "fp32+cache3+branch-1", "fp32+"}) {
    o.modes = {bad};
    EXPECT_THROW(bench_quality(o), InvalidArgument) << bad;
  }
  o.modes = {"fp32"};
  o.prompts = 0;
  EXPECT_THROW(bench_quality(o), InvalidArgument);
  o.prompts = 17;
  EXPECT_THROW(bench_quality(o), InvalidArgument);
  o.prompts = 8;
  o.modes = {};
  EXPECT_THROW(bench_quality(o), InvalidArgument);
  o.modes = {"fp32"};
  o.steps = 0;
  EXPECT_THROW(bench_quality(o), InvalidArgument);
}

}  // namespace
}  // namespace sdcpu
