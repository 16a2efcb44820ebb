// UNet2DConditionModel against diffusers 0.27.2 goldens: the tiny fixture model and the full-size SD 1.5
// architecture with random weights, plus the errors a wrong checkpoint must produce.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>

#include "core/error.h"
#include "formats/model_config.h"
#include "formats/model_files.h"
#include "formats/safetensors.h"
#include "formats/weight_store.h"
#include "nets/unet.h"
#include "nets/unet_blocks.h"
#include "test_support.h"

namespace sdcpu {
namespace {

UNetConfig load_config(const std::string& unet_dir) {
  return parse_unet_config(testing::read_text(unet_dir + "/config.json"));
}

WeightStore load_weights(const std::string& unet_dir) {
  WeightStore w("unet");
  w.add_all(std::make_shared<SafetensorsFile>(unet_dir + "/diffusion_pytorch_model.safetensors"));
  return w;
}

// Runs the model on a golden's inputs, compares with its output and prints the time and max abs error.
void check_golden(const UNet2DConditionModel& model, const std::string& golden_name, double rel_tol) {
  SafetensorsFile& g = testing::golden(golden_name);
  const Tensor sample = g.read_f32("sample"), ehs = g.read_f32("encoder_hidden_states"), expected = g.read_f32("out");
  // Stored as int64, as the schedulers' timesteps are; diffusers turns it into float32 (`.float()`).
  const TensorInfo* t = g.find("timestep");
  ASSERT_NE(t, nullptr);
  const float timestep = t->dtype == DType::I64 || t->dtype == DType::I32
                             ? static_cast<float>(g.read_i64("timestep")[0])
                             : g.read_f32("timestep")[0];
  auto start = std::chrono::steady_clock::now();
  const Tensor out = model.forward(sample, timestep, ehs);
  const double first = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_TENSOR_NEAR(out, expected, rel_tol);
  // The first call also creates the oneDNN primitives for these shapes; the second shows the steady state.
  start = std::chrono::steady_clock::now();
  const Tensor again = model.forward(sample, timestep, ehs);
  const double warm = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_TENSOR_NEAR(again, out, 0.0);
  const auto d = testing::compare(out, expected);
  std::printf("[ %s ] forward %.3f s (first call %.3f s), max abs error %.3g, output scale %.3g\n", golden_name.c_str(),
              warm, first, d.max_abs, d.max_ref);
}

const std::string kTinyUnet = "tiny-sd/unet";

TEST(NetsUnet, TinyMatchesDiffusers) {
  const std::string dir = testing::fixture(kTinyUnet);
  WeightStore w = load_weights(dir);
  UNet2DConditionModel model(load_config(dir), w);
  EXPECT_TRUE(w.unused().empty()) << "unused tensor: " << w.unused().front();
  check_golden(model, "tiny-sd/unet.safetensors", 1e-4);
}

TEST(NetsUnet, TinySingleFileFp16WeightsMatchesDiffusers) {
  // The same model as one original-layout checkpoint with fp16 weights: names mapped and the config derived
  // by formats/, weights widened to fp32 at load.
  ModelFiles files = open_model(testing::fixture("tiny-sd.safetensors"));
  UNet2DConditionModel model(files.unet_config, *files.unet);
  EXPECT_TRUE(files.unet->unused().empty()) << "unused tensor: " << files.unet->unused().front();
  check_golden(model, "tiny-sd/unet_fp16weights.safetensors", 1e-4);
}

TEST(NetsUnet, TinyRunsOnSizesNotDivisibleByTheDownsampling) {
  // 13x17 latents (104x136 images): diffusers forwards upsample_size to each upsampler. Checked for shape
  // and finiteness here; the kernel doing the resize is tested against PyTorch's rule in test_kernels_upsample.
  const std::string dir = testing::fixture(kTinyUnet);
  UNet2DConditionModel model(load_config(dir), load_weights(dir));
  for (auto [h, wd] : {std::pair<int64_t, int64_t>{13, 17}, {1, 1}, {5, 2}}) {
    Tensor sample = Tensor::full({1, 4, h, wd}, 0.25f);
    Tensor ehs = Tensor::full({1, 7, 64}, -0.5f);
    Tensor out = model.forward(sample, 10.0f, ehs);
    ASSERT_EQ(shape_to_string(out.shape()), shape_to_string(Shape{1, 4, h, wd}));
    for (int64_t i = 0; i < out.numel(); ++i) ASSERT_TRUE(std::isfinite(out[i]));
  }
}

TEST(NetsUnet, RejectsBadInputs) {
  const std::string dir = testing::fixture(kTinyUnet);
  UNet2DConditionModel model(load_config(dir), load_weights(dir));
  EXPECT_THROW(model.forward(Tensor::zeros({1, 3, 8, 8}), 1.0f, Tensor::zeros({1, 77, 64})), InvalidArgument);
  EXPECT_THROW(model.forward(Tensor::zeros({1, 4, 8, 8}), 1.0f, Tensor::zeros({1, 77, 32})), InvalidArgument);
  EXPECT_THROW(model.forward(Tensor::zeros({2, 4, 8, 8}), 1.0f, Tensor::zeros({1, 77, 64})), InvalidArgument);
  EXPECT_THROW(model.forward(Tensor::zeros({1, 4, 8, 8}), NAN, Tensor::zeros({1, 77, 64})), InvalidArgument);
}

// Expects `fn` to throw ModelError whose message contains `needle`.
template <typename Fn>
void expect_model_error(Fn fn, const std::string& needle) {
  try {
    fn();
    ADD_FAILURE() << "no ModelError; expected one naming " << needle;
  } catch (const ModelError& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(NetsUnet, WrongShapeIsModelErrorNamingTheTensor) {
  const std::string dir = testing::fixture(kTinyUnet);
  WeightStore w = load_weights(dir);
  UNetConfig config = load_config(dir);
  config.cross_attention_dim = 96;  // the checkpoint's attn2.to_k/to_v are [64, 64]
  expect_model_error([&] { UNet2DConditionModel(config, w); },
                     "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight");
  config = load_config(dir);
  config.in_channels = 5;  // conv_in.weight is [32, 4, 3, 3]
  expect_model_error([&] { UNet2DConditionModel(config, w); }, "conv_in.weight");
}

TEST(NetsUnet, MissingTensorIsModelErrorNamingIt) {
  const std::string dir = testing::fixture(kTinyUnet);
  auto file = std::make_shared<SafetensorsFile>(dir + "/diffusion_pytorch_model.safetensors");
  const std::string missing = "up_blocks.1.attentions.2.transformer_blocks.0.ff.net.2.bias";
  WeightStore w("unet");
  for (const auto& t : file->tensors())
    if (t.name != missing) w.add(t.name, file, t.name);
  expect_model_error([&] { UNet2DConditionModel(load_config(dir), w); }, missing);
}

TEST(NetsUnet, InconsistentConfigIsModelError) {
  const std::string dir = testing::fixture(kTinyUnet);
  WeightStore w = load_weights(dir);
  UNetConfig config = load_config(dir);
  config.num_attention_heads = {8};
  EXPECT_THROW(UNet2DConditionModel(config, w), ModelError);
  config = load_config(dir);
  config.num_attention_heads = {5, 8};  // 32 channels do not split into 5 heads
  EXPECT_THROW(UNet2DConditionModel(config, w), ModelError);
}

TEST(NetsUnet, TimestepEmbeddingMatchesFormula) {
  // diffusers' get_timestep_embedding, evaluated in double: fp32 rounding only.
  const int64_t dim = 32, half = 16;
  for (bool flip : {true, false})
    for (int shift : {0, 1}) {
      Tensor e = unet::timestep_embedding(981.0f, 2, dim, flip, shift);
      ASSERT_EQ(shape_to_string(e.shape()), "[2, 32]");
      for (int64_t i = 0; i < half; ++i) {
        const double arg = 981.0 * std::exp(-std::log(10000.0) * i / (half - shift));
        const double s = std::sin(arg), c = std::cos(arg);
        for (int64_t b = 0; b < 2; ++b) {
          EXPECT_NEAR(e[b * dim + i], flip ? c : s, 2e-4);
          EXPECT_NEAR(e[b * dim + half + i], flip ? s : c, 2e-4);
        }
      }
    }
  Tensor odd = unet::timestep_embedding(3.0f, 1, 7, true, 0);
  EXPECT_EQ(odd[6], 0.0f);  // zero-padded to an odd width
}

// SDXL's UNet structure (tests/oracle/make_sdxl_goldens.py): DownBlock2D first, transformer_layers_per_block
// [1, 1, 2], per-level heads, linear projections, addition_embed_type "text_time"; batch of 2 with different
// pooled embeds and time ids.
const std::string kSdxlUnetDir = std::string(SDCPU_SOURCE_DIR) + "/tests/goldens/sdxl/tiny-sdxl/unet";

TEST(NetsUnet, SdxlTextTimeMatchesDiffusers) {
  const UNetConfig config = load_config(kSdxlUnetDir);
  ASSERT_TRUE(config.has_text_time());
  EXPECT_EQ(config.num_attention_heads, (std::vector<int>{1, 2, 4}));
  EXPECT_EQ(config.transformer_layers_per_block, (std::vector<int>{1, 1, 2}));
  WeightStore w = load_weights(kSdxlUnetDir);
  UNet2DConditionModel model(config, w);
  EXPECT_TRUE(w.unused().empty()) << "unused tensor: " << w.unused().front();

  SafetensorsFile& g = testing::repo_golden("sdxl/unet.safetensors");
  const Tensor sample = g.read_f32("sample"), ehs = g.read_f32("encoder_hidden_states");
  const UNet2DConditionModel::AddedConditions added{g.read_f32("text_embeds"), g.read_f32("time_ids"), Tensor()};
  const float timestep = static_cast<float>(g.read_i64("timestep")[0]);
  const Tensor out = model.forward(sample, timestep, ehs, added);
  EXPECT_TENSOR_NEAR(out, g.read_f32("out"), 1e-4);
  const auto d = testing::compare(out, g.read_f32("out"));
  std::printf("[ sdxl/unet ] max abs error %.3g, output scale %.3g\n", d.max_abs, d.max_ref);

  // The added conditions are not optional for this UNet, and must fit projection_class_embeddings_input_dim.
  EXPECT_THROW(model.forward(sample, timestep, ehs), InvalidArgument);
  const Tensor short_ids({2, 5});
  EXPECT_THROW(model.forward(sample, timestep, ehs, {added.text_embeds, short_ids, Tensor()}), InvalidArgument);
}

TEST(NetsUnet, SdxlMissingAddEmbeddingOrUnknownAdditionTypeIsModelError) {
  auto file = std::make_shared<SafetensorsFile>(kSdxlUnetDir + "/diffusion_pytorch_model.safetensors");
  WeightStore w("unet");
  for (const auto& t : file->tensors())
    if (t.name != "add_embedding.linear_1.weight") w.add(t.name, file, t.name);
  try {
    UNet2DConditionModel model(load_config(kSdxlUnetDir), w);
    FAIL() << "loaded without add_embedding.linear_1.weight";
  } catch (const ModelError& e) {
    EXPECT_NE(std::string(e.what()).find("add_embedding.linear_1.weight"), std::string::npos) << e.what();
  }
  // projection_class_embeddings_input_dim disagreeing with the checkpoint: a shape error naming the tensor.
  UNetConfig wrong = load_config(kSdxlUnetDir);
  wrong.projection_class_embeddings_input_dim += 1;
  WeightStore all = load_weights(kSdxlUnetDir);
  EXPECT_THROW(UNet2DConditionModel(wrong, all), ModelError);
  // An addition type sdcpu does not run is refused at parse time.
  std::string text = testing::read_text(kSdxlUnetDir + "/config.json");
  text.replace(text.find("\"text_time\""), 11, "\"text_image\"");
  EXPECT_THROW(parse_unet_config(text), ModelError);
}

TEST(NetsUnet, Sd15RandomMatchesDiffusers) {
  const std::string root = testing::sd15_random_dir();
  if (root.empty()) GTEST_SKIP() << "set SDCPU_SD15_RANDOM to a folder from make_random_sd.py --layout diffusers";
  const std::string dir = root + "/unet";
  WeightStore w = load_weights(dir);
  const auto start = std::chrono::steady_clock::now();
  UNet2DConditionModel model(load_config(dir), w);
  std::printf("[ sd15-random ] load %.1f s\n",
              std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  EXPECT_TRUE(w.unused().empty()) << "unused tensor: " << w.unused().front();
  check_golden(model, "sd15-random/unet_8x8.safetensors", 1e-4);
  check_golden(model, "sd15-random/unet_16x16.safetensors", 1e-4);
}

}  // namespace
}  // namespace sdcpu
