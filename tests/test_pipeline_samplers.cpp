// The samplers added after the first seven (Euler Karras, Heun, DPM++ 2M SDE and its Karras variant, UniPC, LCM)
// against diffusers' StableDiffusionPipeline on the tiny model, from the folder as it is on disk: the goldens of
// tests/oracle/make_sampler_goldens.py. Each golden's reference is stable (its own float32 and float64 runs agree
// to ~1e-6 of the latents' scale, metadata fp64_rel_diff), so every run is checked free-running: the generator
// draws (the SDE's and LCM's noise) have to line up as well as the arithmetic.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "golden_request.h"
#include "pipeline/generation_parameters.h"
#include "pipeline/txt2img.h"
#include "scheduler_fixtures.h"
#include "test_support.h"

namespace sdcpu {
namespace {

const char* const kSamplers[] = {"euler_karras", "heun", "dpmpp_2m_sde", "dpmpp_2m_sde_karras", "unipc", "lcm"};

std::vector<double> read_f64(const SafetensorsFile& f, const std::string& name) {
  const TensorInfo* info = f.find(name);
  if (!info) return {};
  EXPECT_EQ(info->dtype, DType::F64) << name;
  std::vector<double> v((info->end - info->begin) / sizeof(double));
  std::memcpy(v.data(), f.bytes(*info), v.size() * sizeof(double));
  return v;
}

const Txt2ImgPipeline& folder_pipeline() {
  static const Txt2ImgPipeline pipe(open_model(testing::fixture("tiny-sd")));
  return pipe;
}

const SafetensorsFile& golden_of(const std::string& sampler) {
  return testing::repo_golden("tiny-sd/sampler_" + sampler + "_10steps_cfg7.5_folder_scheduler.safetensors");
}

Txt2ImgRequest request_of(const SafetensorsFile& g) { return testing::golden_request(g); }

TEST(Samplers, TimestepsAndSigmasAreThePipelineGoldens) {
  for (const char* name : kSamplers) {
    SCOPED_TRACE(name);
    const SafetensorsFile& g = golden_of(name);
    auto s = make_scheduler(name, folder_pipeline().scheduler_settings(request_of(g)).config);
    s->set_timesteps(10);
    EXPECT_EQ(s->timesteps(), read_f64(g, "timesteps"));
    EXPECT_EQ(s->sigmas(), read_f64(g, "sigmas"));
    EXPECT_EQ(g.find("latents_per_step")->shape[0], s->num_steps());
  }
  // Heun: one entry per model evaluation, every inner timestep twice.
  auto heun = make_scheduler("heun", folder_pipeline().scheduler_settings(request_of(golden_of("heun"))).config);
  heun->set_timesteps(10);
  ASSERT_EQ(heun->num_steps(), 19);
  EXPECT_EQ(heun->timesteps()[1], heun->timesteps()[2]);
  EXPECT_EQ(heun->sigmas().size(), 20u);
}

TEST(Samplers, EverySamplerMatchesTheRealPipelineCall) {
  for (const char* name : kSamplers) {
    SCOPED_TRACE(name);
    const SafetensorsFile& g = golden_of(name);
    ASSERT_EQ(g.metadata().at("scheduler"), name);
    // A chaotic reference would need teacher forcing (as DDIM with clip_sample does); none of these is.
    ASSERT_LT(std::stod(g.metadata().at("fp64_rel_diff")), 1e-5);
    const Tensor expected = g.read_f32("latents_per_step");
    const Shape latent_shape = {1, 4, 16, 16};
    int steps_seen = 0;
    auto result = folder_pipeline().run(request_of(g), [&](int step, int, const Tensor& latents) {
      SCOPED_TRACE("step " + std::to_string(step));
      ASSERT_LT(step, expected.dim(0));
      EXPECT_TENSOR_NEAR(latents, expected.slice0(step, step + 1).reshape(latent_shape), 1e-4);
      ++steps_seen;
    });
    EXPECT_EQ(steps_seen, expected.dim(0));

    // Images: diffusers' numpy_to_pil rounding; every pixel within 1/255, almost all exact.
    const testing::PixelMatch pixels = testing::compare_pixels(result.image, g.read_f32("image"));
    EXPECT_LE(pixels.worst, 1);
    EXPECT_GE(pixels.exact_fraction, 0.99);
    if (std::getenv("SDCPU_TEST_VERBOSE"))
      std::printf("  %s: %.4f%% pixels exact, worst %d/255\n", name, 100.0 * pixels.exact_fraction, pixels.worst);
  }
}

// The A1111 names the PNG parameters and the service use.
TEST(Samplers, HaveTheirAutomatic1111Names) {
  const std::vector<std::pair<const char*, const char*>> names = {{"euler_karras", "Euler Karras"},
                                                                  {"heun", "Heun"},
                                                                  {"dpmpp_2m_sde", "DPM++ 2M SDE"},
                                                                  {"dpmpp_2m_sde_karras", "DPM++ 2M SDE Karras"},
                                                                  {"unipc", "UniPC"},
                                                                  {"lcm", "LCM"}};
  for (const auto& [sampler, a1111] : names) EXPECT_EQ(a1111_sampler_name(sampler), a1111);
}

}  // namespace
}  // namespace sdcpu
