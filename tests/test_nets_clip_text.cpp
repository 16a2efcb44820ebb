#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "core/error.h"
#include "nets/clip_text.h"
#include "test_support.h"

namespace sdcpu {
namespace {

ClipTextModel load(const std::string& dir, WeightStore& w) {
  w.add_all(std::make_shared<SafetensorsFile>(dir + "/model.safetensors"));
  return ClipTextModel(parse_clip_text_config(testing::read_text(dir + "/config.json")), w);
}

TEST(ClipText, TinyMatchesReference) {
  WeightStore w("text_encoder");
  ClipTextModel model = load(testing::fixture("tiny-sd/text_encoder"), w);
  auto& g = testing::golden("tiny-sd/text_encoder.safetensors");
  EXPECT_TENSOR_NEAR(model.forward(testing::input_id_rows(g)), g.read_f32("last_hidden_state"), 1e-4);
  EXPECT_TRUE(w.unused().empty());
}

TEST(ClipText, FullSizeSd15MatchesReference) {
  const std::string dir = testing::sd15_random_dir();
  if (dir.empty()) GTEST_SKIP() << "set SDCPU_SD15_RANDOM to a model from make_random_sd.py";
  WeightStore w("text_encoder");
  ClipTextModel model = load(dir + "/text_encoder", w);
  auto& g = testing::golden("sd15-random/text_encoder.safetensors");
  EXPECT_TENSOR_NEAR(model.forward(testing::input_id_rows(g)), g.read_f32("last_hidden_state"), 1e-4);
}

// SDXL's two encoders (tests/oracle/make_sdxl_goldens.py): tiny random transformers 4.30.2 CLIPTextModel and
// CLIPTextModelWithProjection, on one row padded with EOS (tokenizer) and one padded with id 0 (tokenizer_2).
std::string sdxl_dir(const std::string& component) {
  return std::string(SDCPU_SOURCE_DIR) + "/tests/goldens/sdxl/" + component;
}

TEST(ClipText, SdxlEncodersPenultimateAndPooledMatchTransformers) {
  auto& g = testing::repo_golden("sdxl/text_encoders.safetensors");
  const auto ids = testing::input_id_rows(g);
  for (const std::string name : {"text_encoder", "text_encoder_2"}) {
    SCOPED_TRACE(name);
    WeightStore w(name);
    ClipTextModel model = load(sdxl_dir(name), w);
    EXPECT_EQ(model.config().with_projection, name == "text_encoder_2");
    const auto out = model.forward_penultimate(ids);
    EXPECT_TENSOR_NEAR(out.hidden_state, g.read_f32(name + ".hidden_states_minus_2"), 1e-4);
    const auto skip1 = model.forward_penultimate(ids, /*clip_skip=*/1);
    EXPECT_TENSOR_NEAR(skip1.hidden_state, g.read_f32(name + ".hidden_states_minus_3"), 1e-4);
    EXPECT_TENSOR_NEAR(model.forward(ids), g.read_f32(name + ".last_hidden_state"), 1e-4);
    if (model.config().with_projection)
      EXPECT_TENSOR_NEAR(out.text_embeds, g.read_f32("text_encoder_2.text_embeds"), 1e-4);
    else
      EXPECT_TRUE(out.text_embeds.empty());
    EXPECT_TRUE(w.unused().empty()) << w.unused().front();
    EXPECT_THROW(model.forward_penultimate(ids, model.config().num_hidden_layers), InvalidArgument);
  }
}

TEST(ClipText, WithProjectionWithoutTheProjectionWeightIsNamed) {
  const std::string dir = sdxl_dir("text_encoder_2");
  auto file = std::make_shared<SafetensorsFile>(dir + "/model.safetensors");
  WeightStore w("text_encoder_2");
  for (const auto& t : file->tensors())
    if (t.name != "text_projection.weight") w.add(t.name, file, t.name);
  try {
    ClipTextModel m(parse_clip_text_config(testing::read_text(dir + "/config.json")), w);
    FAIL() << "loaded without text_projection";
  } catch (const ModelError& e) {
    EXPECT_NE(std::string(e.what()).find("text_projection.weight"), std::string::npos) << e.what();
  }
}

TEST(ClipText, MissingOrMisshapedTensorIsNamed) {
  const std::string dir = testing::fixture("tiny-sd/text_encoder");
  auto file = std::make_shared<SafetensorsFile>(dir + "/model.safetensors");
  ClipTextConfig config = parse_clip_text_config(testing::read_text(dir + "/config.json"));
  {
    WeightStore w("text_encoder");
    for (const auto& t : file->tensors())
      if (t.name != "text_model.encoder.layers.3.mlp.fc1.bias") w.add(t.name, file, t.name);
    try {
      ClipTextModel m(config, w);
      FAIL() << "loaded without a tensor";
    } catch (const ModelError& e) {
      EXPECT_NE(std::string(e.what()).find("text_model.encoder.layers.3.mlp.fc1.bias"), std::string::npos) << e.what();
    }
  }
  {
    WeightStore w("text_encoder");
    w.add_all(file);
    config.intermediate_size = 128;
    try {
      ClipTextModel m(config, w);
      FAIL() << "loaded with a wrong shape";
    } catch (const ModelError& e) {
      EXPECT_NE(std::string(e.what()).find("mlp.fc1.weight"), std::string::npos) << e.what();
    }
  }
}

TEST(ClipText, RejectsBadIds) {
  WeightStore w("text_encoder");
  ClipTextModel model = load(testing::fixture("tiny-sd/text_encoder"), w);
  EXPECT_THROW(model.forward({{49406, 60000}}), InvalidArgument);
  EXPECT_THROW(model.forward({std::vector<int>(78, 1)}), InvalidArgument);
  EXPECT_THROW(model.forward({}), InvalidArgument);
}

}  // namespace
}  // namespace sdcpu
