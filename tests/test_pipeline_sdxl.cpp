// SDXL from a diffusers folder against diffusers 0.27.2's own StableDiffusionXLPipeline.__call__ on the tiny SDXL
// folder (tests/oracle/make_sdxl_goldens.py): the conditioning the UNet sees (two encoders' penultimate states,
// pooled text_embeds, time ids, zeros for an absent negative prompt), the latents after every step and the image.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>

#include "core/error.h"
#include "core/image_png.h"
#include "golden_request.h"
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

Txt2ImgRequest request_of(const SafetensorsFile& g) { return testing::golden_request(g); }

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
  // encode_prompts gives the same states for the prompts themselves (here the encoded negative and the prompt).
  const SafetensorsFile& g = testing::repo_golden(kGoldens[1]);
  const Txt2ImgRequest r = request_of(g);
  EXPECT_TENSOR_NEAR(sdxl_pipeline().encode_prompts({r.negative_prompt, r.prompt}, 0), g.read_f32("prompt_embeds"),
                     1e-4);
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

// The added conditions travel with the prompt embeddings through batching: requests with and without a negative
// prompt (encoded vs zeros) and one with two images per prompt, in one UNet batch, each as it comes out alone.
TEST(PipelineSdxl, BatchedRequestsComeOutAsTheyDoAlone) {
  Txt2ImgRequest base = request_of(testing::repo_golden(kGoldens[1]));
  base.steps = 3;
  base.width = 64;
  base.height = 72;  // time ids (72, 64, 0, 0, 72, 64): not square, so swapped ids would show
  std::vector<Txt2ImgRequest> requests(3, base);
  requests[0].negative_prompt = "";
  requests[1].prompt = "a lighthouse at dusk";
  requests[1].seed = 7;
  requests[2].batch_size = 2;
  const auto batched = sdxl_pipeline().run_batch(requests);
  ASSERT_EQ(batched.size(), requests.size());
  for (size_t r = 0; r < requests.size(); ++r) {
    SCOPED_TRACE("request " + std::to_string(r));
    const auto alone = sdxl_pipeline().run(requests[r]);
    EXPECT_TENSOR_NEAR(batched[r].latents, alone.latents, 1e-5);
  }
  // Image 0 of two per prompt starts from the same noise as one per prompt (randn fills the batch in order).
  Txt2ImgRequest one = requests[2];
  one.batch_size = 1;
  EXPECT_TENSOR_NEAR(batched[2].latents.slice0(0, 1), sdxl_pipeline().run(one).latents, 1e-5);
}

TEST(PipelineSdxl, SecondEncoderGoesThroughTheWeightCache) {
  MemoryOptions memory;
  memory.weight_cache_dir = testing::temp_dir();
  Txt2ImgRequest r = request_of(testing::repo_golden(kGoldens[1]));
  r.steps = 2;
  const Tensor expected = sdxl_pipeline().run(r).latents;
  for (const char* outcome : {"written", "loaded"}) {
    SCOPED_TRACE(outcome);
    const Txt2ImgPipeline cached(open_model(testing::tiny_sdxl_dir()), ComputeType::f32, memory);
    ASSERT_EQ(cached.weight_cache_status().size(), 4u);
    bool saw_encoder_2 = false;
    for (const WeightCacheStatus& s : cached.weight_cache_status()) {
      EXPECT_EQ(s.outcome, outcome) << s.component;
      saw_encoder_2 |= s.component == "text_encoder_2";
    }
    EXPECT_TRUE(saw_encoder_2);
    EXPECT_TENSOR_NEAR(cached.run(r).latents, expected, 0.0);
  }
  // One network's weights in memory at a time: both encoders' are copied in for the text stage.
  memory.low_memory = true;
  const Txt2ImgPipeline low(open_model(testing::tiny_sdxl_dir()), ComputeType::f32, memory);
  EXPECT_TENSOR_NEAR(low.run(r).latents, expected, 0.0);
}

TEST(PipelineSdxl, ClipSkipBeyondTheEncodersIsRefused) {
  Txt2ImgRequest r = request_of(testing::repo_golden(kGoldens[0]));
  r.steps = 1;
  r.clip_skip = 5;  // tiny-sd's encoders have 5 layers: hidden_states[-(clip_skip + 2)] has 6 entries
  EXPECT_THROW(sdxl_pipeline().run(r), InvalidArgument);
  r.clip_skip = 4;  // hidden_states[-6]: the embeddings' output, as diffusers allows
  EXPECT_NO_THROW(sdxl_pipeline().run(r));
}

}  // namespace
}  // namespace sdcpu
