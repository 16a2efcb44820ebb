// TAESD in the pipeline: tiny-sd with the tiny TAESD as its VAE against diffusers' StableDiffusionPipeline
// (tests/goldens/taesd, tests/oracle/make_taesd_goldens.py), previews, the TAESD file layouts, and what is refused.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "core/error.h"
#include "core/image_png.h"
#include "formats/taesd_files.h"
#include "pipeline/txt2img.h"
#include "test_support.h"

namespace sdcpu {
namespace {

namespace fs = std::filesystem;

std::string taesd_golden_dir() { return std::string(SDCPU_SOURCE_DIR) + "/tests/goldens/taesd"; }
std::string tiny_taesd() { return taesd_golden_dir() + "/tiny-taesd"; }

const char* kPipelineGolden = "taesd/pipeline_taesd_dpmpp_2m_10steps_cfg7.5.safetensors";

// The golden's request: the astronaut prompt, seed 42, 128x128, DPM++ 2M from the folder's scheduler config.
Txt2ImgRequest golden_request() {
  Txt2ImgRequest r;
  r.prompt = "a photo of an astronaut riding a horse on mars";
  r.steps = 10;
  r.cfg_scale = 7.5f;
  r.sampler = "dpmpp_2m";
  r.seed = 42;
  r.width = r.height = 128;
  return r;
}

// Every 8-bit pixel within 1/255 of the golden's float image [1, H, W, 3] rounded as diffusers' numpy_to_pil
// does, and at least 99% exact.
void expect_image_matches(const Tensor& image, const Tensor& golden_image) {
  const std::vector<uint8_t> ours = image_to_rgb8(image, 0);
  ASSERT_EQ(static_cast<int64_t>(ours.size()), golden_image.numel());
  int64_t exact = 0, worst = 0;
  for (int64_t i = 0; i < golden_image.numel(); ++i) {
    const int64_t want = static_cast<int64_t>(std::nearbyint(golden_image[i] * 255.0f));
    const int64_t diff = std::llabs(want - ours[i]);
    worst = std::max(worst, diff);
    exact += diff == 0;
  }
  std::printf("[ image    ] %.4f%% pixels exact, worst %lld/255\n", 100.0 * exact / golden_image.numel(),
              static_cast<long long>(worst));
  EXPECT_LE(worst, 1);
  EXPECT_GE(static_cast<double>(exact) / golden_image.numel(), 0.99);
}

TEST(PipelineTaesd, TinySdWithTinyTaesdAsItsVaeMatchesDiffusers) {
  const Txt2ImgPipeline pipe(open_model(testing::fixture("tiny-sd")), ComputeType::f32, {},
                             {open_taesd(tiny_taesd()), /*replaces_vae=*/true});
  EXPECT_TRUE(pipe.taesd_decodes());
  auto& g = testing::repo_golden(kPipelineGolden);
  const Tensor expected = g.read_f32("latents_per_step");
  int steps_seen = 0;
  const auto result = pipe.run(golden_request(), [&](int step, int, const Tensor& latents) {
    SCOPED_TRACE("step " + std::to_string(step));
    EXPECT_TENSOR_NEAR(latents, expected.slice0(step, step + 1).reshape({1, 4, 16, 16}), 1e-4);
    ++steps_seen;
  });
  EXPECT_EQ(steps_seen, 10);
  expect_image_matches(result.image, g.read_f32("image"));
}

// A preview TAESD leaves the images to the model's VAE; its preview of the final latents is what the TAESD
// pipeline golden decoded (the decoder changes nothing before the decode).
TEST(PipelineTaesd, PreviewTaesdDecodesTheLatentsAndTheVaeTheImage) {
  const Txt2ImgPipeline pipe(open_model(testing::fixture("tiny-sd")), ComputeType::f32, {},
                             {open_taesd(tiny_taesd()), /*replaces_vae=*/false});
  EXPECT_FALSE(pipe.taesd_decodes());
  Tensor preview;
  const auto result = pipe.run(golden_request(), [&](int step, int steps, const Tensor& latents) {
    if (step + 1 == steps) preview = pipe.preview_latents(latents);
  });
  expect_image_matches(preview, testing::repo_golden(kPipelineGolden).read_f32("image"));
  // The image is the model's VAE's: diffusers' own pipeline call with tiny-sd's VAE (tests/goldens/tiny-sd has no
  // file for dpmpp_2m from the folder: the shared golden is that call, make_pipeline_goldens.py checked).
  expect_image_matches(
      result.image,
      testing::golden("tiny-sd/pipeline_dpmpp_2m_10steps_cfg7.5_folder_scheduler.safetensors").read_f32("image"));
}

TEST(PipelineTaesd, PreviewWithoutATaesdIsRefused) {
  const Txt2ImgPipeline pipe(open_model(testing::fixture("tiny-sd")));
  EXPECT_EQ(pipe.taesd(), nullptr);
  EXPECT_THROW(pipe.preview_latents(Tensor({1, 4, 8, 8})), InvalidArgument);
}

// madebyollin's taesd_decoder.safetensors layout ("<i + 1>.*" for diffusers' "decoder.layers.<i>.*"), written by
// the oracle from the same weights: the same decoder, so the same golden.
TEST(PipelineTaesd, OriginalDecoderFileDecodesLikeTheFolder) {
  const TaesdFiles t = open_taesd(taesd_golden_dir() + "/taesd_decoder.safetensors");
  EXPECT_EQ(t.layout, "original decoder file");
  EXPECT_FALSE(t.has_encoder);
  EXPECT_EQ(t.config.latent_channels, 4);
  EXPECT_EQ(t.config.decoder_block_out_channels, (std::vector<int>{16, 16, 16, 16}));
  const TaesdDecoder decoder(t.config, *t.weights);
  EXPECT_TRUE(t.weights->unused().empty());
  auto& g = testing::repo_golden("taesd/taesd_decoder_6x10.safetensors");
  EXPECT_TENSOR_NEAR(decoder.forward(g.read_f32("latent")), g.read_f32("image"), 1e-4);
}

// The folder's weights file alone: diffusers' names, no config; widths from the shapes, the rest madebyollin's.
TEST(PipelineTaesd, DiffusersWeightsFileAloneDecodesAndEncodesLikeTheFolder) {
  const TaesdFiles t = open_taesd(tiny_taesd() + "/diffusion_pytorch_model.safetensors");
  EXPECT_EQ(t.layout, "diffusers single file");
  EXPECT_TRUE(t.has_encoder);
  EXPECT_EQ(t.config.decoder_block_out_channels, (std::vector<int>{16, 16, 16, 16}));
  EXPECT_EQ(t.config.encoder_block_out_channels, (std::vector<int>{8, 8, 8, 8}));
  const TaesdDecoder decoder(t.config, *t.weights);
  const TaesdEncoder encoder(t.config, *t.weights);
  auto& d = testing::repo_golden("taesd/taesd_decoder_8x8.safetensors");
  EXPECT_TENSOR_NEAR(decoder.forward(d.read_f32("latent")), d.read_f32("image"), 1e-4);
  auto& e = testing::repo_golden("taesd/taesd_encoder_40x56.safetensors");
  EXPECT_TENSOR_NEAR(encoder.forward(e.read_f32("image")), e.read_f32("latents"), 1e-4);
}

TEST(PipelineTaesd, FolderIsOpenedWithItsConfig) {
  const TaesdFiles t = open_taesd(tiny_taesd());
  EXPECT_EQ(t.layout, "diffusers folder");
  EXPECT_TRUE(t.has_encoder);
  EXPECT_EQ(t.config.encoder_block_out_channels, (std::vector<int>{8, 8, 8, 8}));
}

// A copy of the tiny TAESD whose config.json has `key` set to `value` (JSON text).
std::string taesd_with(const std::string& key, const std::string& value) {
  const std::string dir = testing::temp_dir() + "/taesd-" + key;
  fs::create_directories(dir);
  fs::copy_file(tiny_taesd() + "/diffusion_pytorch_model.safetensors", dir + "/diffusion_pytorch_model.safetensors");
  std::string config = testing::read_text(tiny_taesd() + "/config.json");
  const size_t at = config.find("\"" + key + "\"");
  const size_t end = config.find_first_of(",}", config.find(':', at));
  config.replace(at, end - at, "\"" + key + "\": " + value);
  std::ofstream(dir + "/config.json", std::ios::trunc) << config;
  return dir;
}

std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(PipelineTaesd, ATaesdForTheWrongLatentSpaceIsRefusedBeforeAnyNetworkIsBuilt) {
  // taesd3 / taef1 decode 16-channel latents; an SD 1.x UNet makes 4.
  const std::string msg = message_of([] {
    Txt2ImgPipeline(open_model(testing::fixture("tiny-sd")), ComputeType::f32, {},
                    {open_taesd(taesd_with("latent_channels", "16")), true});
  });
  EXPECT_NE(msg.find("a TAESD for the wrong latent space"), std::string::npos) << msg;
  EXPECT_NE(msg.find("16-channel"), std::string::npos) << msg;
  // A TAESD that upsamples by 3 per level would make 27x larger images.
  const std::string upscale = message_of([] {
    Txt2ImgPipeline(open_model(testing::fixture("tiny-sd")), ComputeType::f32, {},
                    {open_taesd(taesd_with("upsampling_scaling_factor", "3")), false});
  });
  EXPECT_NE(upscale.find("27x larger"), std::string::npos) << upscale;
}

// A minimal safetensors file holding one F32 tensor `name` of shape [1].
std::string one_tensor_file(const std::string& name) {
  const std::string path = testing::temp_dir() + "/" + name + ".safetensors";
  std::string header = "{\"" + name + "\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}";
  header.append((8 - header.size() % 8) % 8, ' ');
  std::ofstream out(path, std::ios::binary);
  const uint64_t n = header.size();
  out.write(reinterpret_cast<const char*>(&n), 8);
  out << header;
  const float zero = 0;
  out.write(reinterpret_cast<const char*>(&zero), 4);
  return path;
}

TEST(PipelineTaesd, WhatIsNotATaesdDecoderIsRefusedClearly) {
  auto refusal = [](const std::string& path) { return message_of([&] { open_taesd(path); }); };
  // The model's own AutoencoderKL folder.
  EXPECT_NE(refusal(testing::fixture("tiny-sd/vae")).find("not AutoencoderTiny"), std::string::npos);
  // madebyollin's taesd_encoder.safetensors (its first tensor is "0.weight").
  EXPECT_NE(refusal(one_tensor_file("0.weight")).find("TAESD's encoder"), std::string::npos);
  // Any other safetensors file: a UNet's, say.
  EXPECT_NE(refusal(testing::fixture("tiny-sd/unet/diffusion_pytorch_model.safetensors")).find("not a TAESD"),
            std::string::npos);
  EXPECT_NE(refusal(taesd_golden_dir() + "/nothing-here").find("no such file"), std::string::npos);
  EXPECT_NE(refusal("/tmp/taesd_decoder.pth").find("no such file"), std::string::npos);
  const std::string pth = testing::temp_dir() + "/taesd_decoder.pth";
  std::ofstream(pth) << "x";
  EXPECT_NE(refusal(pth).find("pickle"), std::string::npos);
  // A folder without weights.
  const std::string empty = testing::temp_dir() + "/empty-taesd";
  fs::create_directories(empty);
  fs::copy_file(tiny_taesd() + "/config.json", empty + "/config.json");
  EXPECT_NE(refusal(empty).find("no TAESD weights"), std::string::npos);
}

}  // namespace
}  // namespace sdcpu
