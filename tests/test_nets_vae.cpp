// The AutoencoderKL decoder and encoder against diffusers 0.27.2 (fixtures/goldens), and load errors.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "nets/vae.h"
#include "test_support.h"

namespace sdcpu {
namespace {

VaeConfig config_of(const std::string& dir) { return parse_vae_config(testing::read_text(dir + "/config.json")); }

std::shared_ptr<SafetensorsFile> weights_of(const std::string& dir) {
  return std::make_shared<SafetensorsFile>(dir + "/diffusion_pytorch_model.safetensors");
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Prints the achieved error, so the report can quote it.
void report(const char* what, const Tensor& actual, const Tensor& expected) {
  auto d = testing::compare(actual, expected);
  std::printf("[ error    ] %s: max abs %.3g, output scale %.3g\n", what, d.max_abs, d.max_ref);
}

TEST(Vae, TinyDecoderMatchesReference) {
  const std::string dir = testing::fixture("tiny-sd/vae");
  WeightStore w("vae");
  w.add_all(weights_of(dir));
  VaeDecoder decoder(config_of(dir), w);
  auto& g = testing::golden("tiny-sd/vae_decoder.safetensors");
  Tensor image = decoder.forward(g.read_f32("latent"));
  report("tiny decoder image", image, g.read_f32("image"));
  EXPECT_TENSOR_NEAR(image, g.read_f32("image"), 1e-4);
}

TEST(Vae, TinyEncoderMatchesReference) {
  const std::string dir = testing::fixture("tiny-sd/vae");
  WeightStore w("vae");
  w.add_all(weights_of(dir));
  VaeEncoder encoder(config_of(dir), w);
  auto& g = testing::golden("tiny-sd/vae_encoder.safetensors");
  VaeEncoder::Output out = encoder.forward(g.read_f32("image"));
  report("tiny encoder mean", out.mean, g.read_f32("mean"));
  report("tiny encoder std", out.std, g.read_f32("std"));
  EXPECT_TENSOR_NEAR(out.mean, g.read_f32("mean"), 1e-4);
  EXPECT_TENSOR_NEAR(out.std, g.read_f32("std"), 1e-4);
}

TEST(Vae, EncoderAndDecoderUseEveryTensor) {
  const std::string dir = testing::fixture("tiny-sd/vae");
  WeightStore w("vae");
  w.add_all(weights_of(dir));
  VaeDecoder decoder(config_of(dir), w);
  VaeEncoder encoder(config_of(dir), w);
  EXPECT_TRUE(w.unused().empty()) << w.unused().size() << " unused, first " << w.unused().front();
}

TEST(Vae, FullSizeSd15DecoderMatchesReference) {
  const std::string root = testing::sd15_random_dir();
  if (root.empty()) GTEST_SKIP() << "set SDCPU_SD15_RANDOM to a model from make_random_sd.py";
  WeightStore w("vae");
  w.add_all(weights_of(root + "/vae"));
  VaeDecoder decoder(config_of(root + "/vae"), w);
  auto& g = testing::golden("sd15-random/vae_decoder_8x8.safetensors");
  const Tensor latent = g.read_f32("latent");
  decoder.forward(latent);  // the first call creates the oneDNN primitives
  const auto t0 = std::chrono::steady_clock::now();
  Tensor image = decoder.forward(latent);
  std::printf("[ timing   ] sd15 VAE decode, 8x8 latent -> 64x64 image: %.3f s\n", seconds_since(t0));
  report("sd15 decoder image", image, g.read_f32("image"));
  EXPECT_TENSOR_NEAR(image, g.read_f32("image"), 1e-4);
}

// A timing, not a check: the 512x512 decode. Run with --gtest_also_run_disabled_tests.
TEST(Vae, DISABLED_Sd15Decode512Timing) {
  const std::string root = testing::sd15_random_dir();
  if (root.empty()) GTEST_SKIP() << "set SDCPU_SD15_RANDOM to a model from make_random_sd.py";
  WeightStore w("vae");
  w.add_all(weights_of(root + "/vae"));
  VaeDecoder decoder(config_of(root + "/vae"), w);
  const Tensor latent = Tensor::full({1, 4, 64, 64}, 0.5f);
  const auto t0 = std::chrono::steady_clock::now();
  Tensor image = decoder.forward(latent);
  std::printf("[ timing   ] sd15 VAE decode, 64x64 latent -> 512x512 image (first call): %.3f s\n", seconds_since(t0));
  EXPECT_EQ(image.shape(), (Shape{1, 3, 512, 512}));
}

// Loading with one tensor left out, or replaced by one of another shape, fails naming that tensor.
void expect_load_error(const std::string& missing, const std::string& misshaped, const std::string& stand_in,
                       bool encoder) {
  const std::string dir = testing::fixture("tiny-sd/vae");
  auto file = weights_of(dir);
  const VaeConfig config = config_of(dir);
  auto build = [&](const WeightStore& w) {
    if (encoder) {
      VaeEncoder e(config, w);
    } else {
      VaeDecoder d(config, w);
    }
  };
  {
    WeightStore w("vae");
    for (const auto& t : file->tensors())
      if (t.name != missing) w.add(t.name, file, t.name);
    try {
      build(w);
      ADD_FAILURE() << "loaded without " << missing;
    } catch (const ModelError& e) {
      EXPECT_NE(std::string(e.what()).find(missing), std::string::npos) << e.what();
    }
  }
  {
    WeightStore w("vae");
    w.add_all(file);
    w.add(misshaped, file, stand_in);
    try {
      build(w);
      ADD_FAILURE() << "loaded with a wrong shape for " << misshaped;
    } catch (const ModelError& e) {
      EXPECT_NE(std::string(e.what()).find(misshaped), std::string::npos) << e.what();
    }
  }
}

TEST(Vae, DecoderMissingOrMisshapedTensorIsNamed) {
  // tiny: block_out_channels (32, 32, 64, 64), so up block 2 goes 64 -> 32 and its first resnet has a shortcut.
  expect_load_error("decoder.mid_block.attentions.0.to_k.bias", "decoder.up_blocks.2.resnets.0.conv1.weight",
                    "decoder.up_blocks.2.resnets.1.conv1.weight", /*encoder=*/false);
  expect_load_error("decoder.up_blocks.2.resnets.0.conv_shortcut.weight", "post_quant_conv.weight", "quant_conv.weight",
                    /*encoder=*/false);
}

TEST(Vae, EncoderMissingOrMisshapedTensorIsNamed) {
  expect_load_error("encoder.down_blocks.1.downsamplers.0.conv.bias", "encoder.conv_out.weight",
                    "encoder.conv_in.weight", /*encoder=*/true);
  expect_load_error("quant_conv.bias", "encoder.mid_block.attentions.0.group_norm.weight", "encoder.conv_in.bias",
                    /*encoder=*/true);
}

TEST(Vae, RejectsBadInputShapes) {
  const std::string dir = testing::fixture("tiny-sd/vae");
  WeightStore w("vae");
  w.add_all(weights_of(dir));
  VaeDecoder decoder(config_of(dir), w);
  VaeEncoder encoder(config_of(dir), w);
  EXPECT_THROW(decoder.forward(Tensor::zeros({1, 3, 8, 8})), InvalidArgument);
  EXPECT_THROW(decoder.forward(Tensor::zeros({4, 8, 8})), InvalidArgument);
  EXPECT_THROW(encoder.forward(Tensor::zeros({1, 4, 64, 64})), InvalidArgument);
}

}  // namespace
}  // namespace sdcpu
