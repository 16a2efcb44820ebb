// TAESD (diffusers.AutoencoderTiny) decoder and encoder against diffusers 0.27.2 (tests/goldens/taesd, made by
// tests/oracle/make_taesd_goldens.py), in fp32 and bf16, and what is refused.
//
// The bf16 bound. TAESD has no norms to re-center its activations: ~35 convolutions (decoder) whose inputs and
// weights are rounded to bf16 (up to 2^-9 relative each), summed in fp32, residual connections around every
// three. The errors of independent roundings grow like the square root of the depth, and the 3-conv blocks add
// their input back, so the relative error should stay near that of one conv times a small factor: the VAE
// decoders measured 1.0-2.2% of the output scale (tests/test_nets_bf16.cpp). We allow the same 3e-2 of the output
// scale as the other networks. Measured on the tiny TAESD (printed): decoder 0.57-0.61%, encoder 0.54-0.58% of the
// output scale (fp32: 3e-7 to 6.4e-7).
#include <gtest/gtest.h>

#include <cstdio>
#include <memory>
#include <string>

#include "core/error.h"
#include "formats/model_config.h"
#include "kernels/cpu_features.h"
#include "nets/taesd.h"
#include "test_support.h"

namespace sdcpu {
namespace {

constexpr double kBf16Tolerance = 3e-2;

std::string tiny_dir() { return std::string(SDCPU_SOURCE_DIR) + "/tests/goldens/taesd/tiny-taesd"; }

TaesdConfig tiny_config() { return parse_taesd_config(testing::read_text(tiny_dir() + "/config.json")); }

WeightStore tiny_store(ComputeType compute = ComputeType::f32) {
  WeightStore w("vae");
  w.add_all(std::make_shared<SafetensorsFile>(tiny_dir() + "/diffusion_pytorch_model.safetensors"));
  w.set_compute_type(compute);
  return w;
}

void report(const std::string& what, const Tensor& actual, const Tensor& expected) {
  auto d = testing::compare(actual, expected);
  std::printf("[ error    ] %s: max abs %.3g, output scale %.3g (%.2g of scale)\n", what.c_str(), d.max_abs, d.max_ref,
              d.max_abs / std::max(1.0, d.max_ref));
}

const char* kDecoderGoldens[] = {"taesd/taesd_decoder_8x8.safetensors", "taesd/taesd_decoder_6x10.safetensors"};
const char* kEncoderGoldens[] = {"taesd/taesd_encoder_64x64.safetensors", "taesd/taesd_encoder_40x56.safetensors"};

TEST(Taesd, ConfigIsReadAsDiffusersWritesIt) {
  const TaesdConfig c = tiny_config();
  EXPECT_EQ(c.latent_channels, 4);
  EXPECT_EQ(c.decoder_block_out_channels, (std::vector<int>{16, 16, 16, 16}));
  EXPECT_EQ(c.encoder_block_out_channels, (std::vector<int>{8, 8, 8, 8}));
  EXPECT_EQ(c.num_decoder_blocks, (std::vector<int>{3, 3, 3, 1}));
  EXPECT_EQ(c.num_encoder_blocks, (std::vector<int>{1, 3, 3, 3}));
  EXPECT_EQ(c.upsampling_scaling_factor, 2);
  EXPECT_EQ(c.scaling_factor, 1.0f);
}

TEST(Taesd, TinyDecoderMatchesReference) {
  WeightStore w = tiny_store();
  TaesdDecoder decoder(tiny_config(), w);
  EXPECT_EQ(decoder.upscale(), 8);
  for (const char* name : kDecoderGoldens) {
    SCOPED_TRACE(name);
    auto& g = testing::repo_golden(name);
    const Tensor image = decoder.forward(g.read_f32("latent"));
    report(name, image, g.read_f32("image"));
    EXPECT_TENSOR_NEAR(image, g.read_f32("image"), 1e-4);
  }
}

TEST(Taesd, TinyEncoderMatchesReference) {
  WeightStore w = tiny_store();
  TaesdEncoder encoder(tiny_config(), w);
  for (const char* name : kEncoderGoldens) {
    SCOPED_TRACE(name);
    auto& g = testing::repo_golden(name);
    const Tensor latents = encoder.forward(g.read_f32("image"));
    report(name, latents, g.read_f32("latents"));
    EXPECT_TENSOR_NEAR(latents, g.read_f32("latents"), 1e-4);
  }
}

TEST(Taesd, DecoderAndEncoderUseEveryTensor) {
  WeightStore w = tiny_store();
  TaesdDecoder decoder(tiny_config(), w);
  TaesdEncoder encoder(tiny_config(), w);
  EXPECT_TRUE(w.unused().empty()) << w.unused().size() << " unused, first " << w.unused().front();
}

TEST(Taesd, Bf16MatchesReferenceWithinBf16Bound) {
  if (!cpu_has_native_bf16()) GTEST_SKIP() << "no AVX512_BF16 / AMX on this CPU";
  WeightStore w = tiny_store(ComputeType::bf16);
  TaesdDecoder decoder(tiny_config(), w);
  TaesdEncoder encoder(tiny_config(), w);
  auto check = [](const std::string& what, const Tensor& actual, const Tensor& expected) {
    const auto d = testing::compare(actual, expected);
    std::printf("[ bf16     ] %s: max abs error %.3g, output scale %.3g (%.2g of scale)\n", what.c_str(), d.max_abs,
                d.max_ref, d.max_abs / std::max(1.0, d.max_ref));
    EXPECT_TENSOR_NEAR(actual, expected, kBf16Tolerance);
    EXPECT_GT(d.max_abs, 1e-6 * std::max(1.0, d.max_ref)) << what << ": no bf16 rounding visible";
  };
  for (const char* name : kDecoderGoldens) {
    auto& g = testing::repo_golden(name);
    check(name, decoder.forward(g.read_f32("latent")), g.read_f32("image"));
  }
  for (const char* name : kEncoderGoldens) {
    auto& g = testing::repo_golden(name);
    check(name, encoder.forward(g.read_f32("image")), g.read_f32("latents"));
  }
}

TEST(Taesd, RefusesInputsOfTheWrongShape) {
  WeightStore w = tiny_store();
  TaesdDecoder decoder(tiny_config(), w);
  TaesdEncoder encoder(tiny_config(), w);
  EXPECT_THROW(decoder.forward(Tensor({1, 16, 8, 8})), InvalidArgument);  // a 16-channel latent
  EXPECT_THROW(decoder.forward(Tensor({4, 8, 8})), InvalidArgument);
  EXPECT_THROW(encoder.forward(Tensor({1, 4, 64, 64})), InvalidArgument);
}

TEST(Taesd, RefusesConfigsItCannotRun) {
  auto parse = [](const std::string& json) { return parse_taesd_config(json); };
  EXPECT_THROW(parse(R"({"_class_name": "AutoencoderKL"})"), ModelError);
  EXPECT_THROW(parse(R"({"act_fn": "silu"})"), ModelError);
  EXPECT_THROW(parse(R"({"decoder_block_out_channels": [64, 32, 64, 64]})"), ModelError);
  EXPECT_THROW(parse(R"({"num_decoder_blocks": [3, 3, 3]})"), ModelError);
  EXPECT_THROW(parse(R"({"latent_channels": 0})"), ModelError);
  EXPECT_THROW(parse(R"({"upsampling_scaling_factor": 0})"), ModelError);
  EXPECT_THROW(parse("[1, 2]"), ModelError);
  EXPECT_NO_THROW(parse("{}"));  // diffusers' defaults: madebyollin/taesd's config
}

TEST(Taesd, RefusesAStoreThatIsNotThisTaesd) {
  // Weights of another width: the first convolution's shape names the problem.
  TaesdConfig wider = tiny_config();
  wider.decoder_block_out_channels = {64, 64, 64, 64};
  WeightStore w = tiny_store();
  try {
    TaesdDecoder decoder(wider, w);
    FAIL() << "no error";
  } catch (const ModelError& e) {
    EXPECT_NE(std::string(e.what()).find("decoder.layers.0.weight"), std::string::npos) << e.what();
  }
  // A store without the decoder's tensors (an AutoencoderKL's, say).
  WeightStore empty("vae");
  EXPECT_THROW(TaesdDecoder(tiny_config(), empty), ModelError);
}

}  // namespace
}  // namespace sdcpu
