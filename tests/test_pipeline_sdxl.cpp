// SDXL from a diffusers folder against diffusers 0.27.2's own StableDiffusionXLPipeline.__call__ on the tiny SDXL
// folder (tests/oracle/make_sdxl_goldens.py): the conditioning the UNet sees (two encoders' penultimate states,
// pooled text_embeds, time ids, zeros for an absent negative prompt), the latents after every step and the image.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>

#include "core/error.h"
#include "core/image_png.h"
#include "pipeline/txt2img.h"
#include "test_support.h"

namespace sdcpu {
namespace {

const char* const kGoldens[] = {"sdxl/pipeline_euler_8steps_cfg5_noneg.safetensors",
                                "sdxl/pipeline_dpmpp_2m_8steps_cfg5_neg.safetensors",
                                "sdxl/pipeline_euler_a_8steps_cfg1_noneg.safetensors"};

const Txt2ImgPipeline& sdxl_pipeline() {
  static const Txt2ImgPipeline pipe(open_model(testing::tiny_sdxl_dir()));
  return pipe;
}

Txt2ImgRequest request_of(const SafetensorsFile& g) {
  Txt2ImgRequest r;
  r.prompt = g.metadata().at("prompt");
  r.negative_prompt = g.metadata().at("negative_prompt");
  r.steps = std::stoi(g.metadata().at("steps"));
  r.cfg_scale = std::stof(g.metadata().at("guidance_scale"));
  r.sampler = g.metadata().at("scheduler");
  r.seed = std::stoull(g.metadata().at("seed"));
  r.width = std::stoi(g.metadata().at("width"));
  r.height = std::stoi(g.metadata().at("height"));
  return r;
}

TEST(PipelineSdxl, FolderLoadsAsSdxl) {
  const ModelFiles files = open_model(testing::tiny_sdxl_dir());
  EXPECT_EQ(files.architecture, "SDXL");
  ASSERT_TRUE(files.text_encoder_2);
  EXPECT_TRUE(files.text_encoder_2_config.with_projection);
  EXPECT_TRUE(files.force_zeros_for_empty_prompt);
  EXPECT_FLOAT_EQ(files.vae_config.scaling_factor, 0.13025f);
  EXPECT_EQ(sdxl_pipeline().conditioning_family().name, "SDXL");
  const ModelFiles& built = sdxl_pipeline().files();  // every weight of the networks it built was used
  for (const auto* store : {built.text_encoder.get(), built.text_encoder_2.get(), built.unet.get()})
    EXPECT_TRUE(store->unused().empty()) << store->component() << ": " << store->unused().front();
}

TEST(PipelineSdxl, Tokenizer2PadsWithExclamationMark) {
  // SDXL's tokenizer_2 pads with "!" (id 0), which moves where CLIPTextModelWithProjection pools: still the EOS,
  // the argmax of the ids.
  const ClipTokenizer t2 = ClipTokenizer::from_directory(open_model(testing::tiny_sdxl_dir()).tokenizer_2_dir);
  EXPECT_EQ(t2.pad_id(), 0);
  const std::vector<int> ids = t2.encode("a horse", 77);
  EXPECT_EQ(ids.back(), 0);
}

TEST(PipelineSdxl, ConditioningIsWhatTheUNetSawInDiffusers) {
  for (const char* name : kGoldens) {
    SCOPED_TRACE(name);
    const SafetensorsFile& g = testing::repo_golden(name);
    const PromptConditioning c = sdxl_pipeline().encode_conditioning(request_of(g));
    EXPECT_TENSOR_NEAR(c.encoder_hidden_states, g.read_f32("prompt_embeds"), 1e-4);
    EXPECT_TENSOR_NEAR(c.text_embeds, g.read_f32("add_text_embeds"), 1e-4);
    EXPECT_TENSOR_NEAR(c.time_ids, g.read_f32("add_time_ids"), 0.0);
  }
}

TEST(PipelineSdxl, LatentsPerStepAndImageMatchDiffusers) {
  for (const char* name : kGoldens) {
    SCOPED_TRACE(name);
    const SafetensorsFile& g = testing::repo_golden(name);
    const Tensor expected = g.read_f32("latents_per_step");
    const Shape latent_shape = {1, 4, 16, 16};
    int steps_seen = 0;
    auto result = sdxl_pipeline().run(request_of(g), [&](int step, int, const Tensor& latents) {
      SCOPED_TRACE("step " + std::to_string(step));
      ASSERT_LT(step, expected.dim(0));
      EXPECT_TENSOR_NEAR(latents, expected.slice0(step, step + 1).reshape(latent_shape), 1e-4);
      ++steps_seen;
    });
    EXPECT_EQ(steps_seen, expected.dim(0));

    // Images: diffusers' numpy_to_pil rounding; every pixel within 1/255, almost all exact.
    const Tensor golden_image = g.read_f32("image");
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
    std::printf("  %s: %.4f%% pixels exact, worst %lld/255\n", name, 100.0 * exact / golden_image.numel(),
                static_cast<long long>(worst));
  }
}

TEST(PipelineSdxl, ClipSkipBeyondTheEncodersIsRefused) {
  Txt2ImgRequest r = request_of(testing::repo_golden(kGoldens[0]));
  r.steps = 1;
  r.clip_skip = 4;  // tiny-sd's encoders have 5 layers; SDXL reads hidden_states[-(clip_skip + 2)]
  EXPECT_THROW(sdxl_pipeline().run(r), InvalidArgument);
}

}  // namespace
}  // namespace sdcpu
