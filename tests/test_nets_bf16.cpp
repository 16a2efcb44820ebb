// The networks in bf16 (WeightStore compute type bf16: weights packed as bfloat16, the products' inputs rounded
// to bf16, fp32 accumulation, norms and softmax in fp32) against the same fp32 diffusers/CLIP goldens as the fp32
// tests, with bf16's tolerance.
//
// The bound. bf16 keeps 8 significant bits: rounding an operand costs up to 2^-9 = 0.2% relative error, and a
// product of two rounded operands summed over K terms errs by about 2^-9 * sqrt(2) relative when the terms'
// errors are independent. Residual connections keep the error from compounding through the depth. Measured on
// the fixtures (printed by the tests): 0.7-2.2% of the output scale (text encoders 0.7-0.9%, UNets 0.8-0.9%,
// VAE decoders 1.0% full size, 2.2% tiny); we allow 3e-2 of the output scale. A kernel that accumulated in bf16,
// or rounded an output between layers it should keep in fp32, lands far above it.
#include <gtest/gtest.h>

#include <cstdio>
#include <memory>
#include <string>

#include "formats/model_config.h"
#include "formats/safetensors.h"
#include "formats/weight_store.h"
#include "kernels/cpu_features.h"
#include "nets/clip_text.h"
#include "nets/unet.h"
#include "nets/vae.h"
#include "test_support.h"

namespace sdcpu {
namespace {

constexpr double kBf16Tolerance = 3e-2;

WeightStore bf16_store(const std::string& component, const std::string& file) {
  WeightStore w(component);
  w.add_all(std::make_shared<SafetensorsFile>(file));
  w.set_compute_type(ComputeType::bf16);
  return w;
}

// Checks the bound, prints the achieved error (for the closing notes), and checks that bf16 really ran: an
// output identical to fp32 to 1e-6 would mean the products were not rounded.
void expect_bf16_close(const char* what, const Tensor& actual, const Tensor& expected) {
  const auto d = testing::compare(actual, expected);
  std::printf("[ bf16     ] %s: max abs error %.3g, output scale %.3g (%.2g of scale)\n", what, d.max_abs, d.max_ref,
              d.max_abs / std::max(1.0, d.max_ref));
  EXPECT_TENSOR_NEAR(actual, expected, kBf16Tolerance);
  EXPECT_GT(d.max_abs, 1e-6 * std::max(1.0, d.max_ref)) << what << ": no bf16 rounding visible";
}

class NetsBf16 : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!cpu_has_native_bf16()) GTEST_SKIP() << "no AVX512_BF16 / AMX on this CPU";
  }
};

void check_text_encoder(const std::string& dir, const std::string& golden) {
  WeightStore w = bf16_store("text_encoder", dir + "/model.safetensors");
  ClipTextModel model(parse_clip_text_config(testing::read_text(dir + "/config.json")), w);
  auto& g = testing::golden(golden);
  expect_bf16_close(golden.c_str(), model.forward(testing::input_id_rows(g)), g.read_f32("last_hidden_state"));
}

void check_unet(const UNet2DConditionModel& model, const std::string& golden) {
  SafetensorsFile& g = testing::golden(golden);
  const TensorInfo* t = g.find("timestep");
  ASSERT_NE(t, nullptr);
  const float timestep = t->dtype == DType::I64 || t->dtype == DType::I32
                             ? static_cast<float>(g.read_i64("timestep")[0])
                             : g.read_f32("timestep")[0];
  const Tensor out = model.forward(g.read_f32("sample"), timestep, g.read_f32("encoder_hidden_states"));
  expect_bf16_close(golden.c_str(), out, g.read_f32("out"));
}

void check_vae_decoder(const std::string& dir, const std::string& golden) {
  WeightStore w = bf16_store("vae", dir + "/diffusion_pytorch_model.safetensors");
  VaeDecoder decoder(parse_vae_config(testing::read_text(dir + "/config.json")), w);
  auto& g = testing::golden(golden);
  expect_bf16_close(golden.c_str(), decoder.forward(g.read_f32("latent")), g.read_f32("image"));
}

TEST_F(NetsBf16, TinyTextEncoder) {
  check_text_encoder(testing::fixture("tiny-sd/text_encoder"), "tiny-sd/text_encoder.safetensors");
}

TEST_F(NetsBf16, TinyUnet) {
  const std::string dir = testing::fixture("tiny-sd/unet");
  WeightStore w = bf16_store("unet", dir + "/diffusion_pytorch_model.safetensors");
  UNet2DConditionModel model(parse_unet_config(testing::read_text(dir + "/config.json")), w);
  check_unet(model, "tiny-sd/unet.safetensors");
}

TEST_F(NetsBf16, TinyVaeDecoder) {
  check_vae_decoder(testing::fixture("tiny-sd/vae"), "tiny-sd/vae_decoder.safetensors");
}

TEST_F(NetsBf16, FullSizeSd15) {
  const std::string root = testing::sd15_random_dir();
  if (root.empty()) GTEST_SKIP() << "set SDCPU_SD15_RANDOM to a model from make_random_sd.py";
  check_text_encoder(root + "/text_encoder", "sd15-random/text_encoder.safetensors");
  {
    WeightStore w = bf16_store("unet", root + "/unet/diffusion_pytorch_model.safetensors");
    UNet2DConditionModel model(parse_unet_config(testing::read_text(root + "/unet/config.json")), w);
    check_unet(model, "sd15-random/unet_8x8.safetensors");
    check_unet(model, "sd15-random/unet_16x16.safetensors");
  }
  check_vae_decoder(root + "/vae", "sd15-random/vae_decoder_8x8.safetensors");
}

}  // namespace
}  // namespace sdcpu
