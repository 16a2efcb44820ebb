// SD 2.x single-file checkpoints (OpenCLIP text encoder): the mapping and configurations against what diffusers
// 0.27.2's StableDiffusionPipeline.from_single_file built from the same file (tests/goldens/tiny-sd2, made by
// tests/oracle/make_sd2_single_file_goldens.py), the prediction type from the .yaml, the option and diffusers'
// rule, row views into fused tensors, and the errors for broken files.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "config_compare.h"
#include "core/error.h"
#include "formats/model_files.h"
#include "formats/original_config.h"
#include "formats/single_file.h"
#include "formats/single_file_keys.h"
#include "sd2_single_file_fixture.h"
#include "test_support.h"

namespace sdcpu {
namespace {

using nlohmann::json;

json golden_metadata_json(const std::string& golden, const std::string& key) {
  return json::parse(testing::repo_golden("tiny-sd2/" + golden + ".safetensors").metadata().at(key));
}

TEST(Sd2SingleFile, ConfigsAreWhatFromSingleFileBuilt) {
  for (const auto& [yaml, golden] : {std::pair<std::string, std::string>{"v", "sd2_v_dpmpp_2m_8steps_cfg7.5"},
                                     {"eps", "sd2_eps_dpmpp_2m_8steps_cfg7.5"}}) {
    SCOPED_TRACE(yaml);
    const ModelFiles m = open_model(testing::tiny_sd2_file(yaml));
    EXPECT_EQ(m.layout, "single file");
    EXPECT_EQ(m.architecture, "SD 2.x");
    // The configs diffusers built, read by the same parsers as a folder's config.json files.
    testing::expect_same_config(parse_unet_config(golden_metadata_json(golden, "unet_config").dump()), m.unet_config);
    testing::expect_same_config(parse_vae_config(golden_metadata_json(golden, "vae_config").dump()), m.vae_config);
    testing::expect_same_config(parse_clip_text_config(golden_metadata_json(golden, "text_encoder_config").dump()),
                                m.text_encoder_config);
    EXPECT_EQ(m.text_encoder_config.num_hidden_layers, 2);  // the file has 3 resblocks: the last is dropped
    EXPECT_EQ(m.text_encoder_config.hidden_act, "gelu");
    EXPECT_EQ(m.unet_config.num_attention_heads, (std::vector<int>{2, 4}));
    EXPECT_EQ(m.unet_config.sample_size, yaml == "v" ? 96 : 64);  // set_image_size: 768 for "v" configs
    EXPECT_EQ(m.tokenizer_pad_token, "!");

    // Every key of the DDIMScheduler config diffusers built, with its value.
    const json expected = golden_metadata_json(golden, "scheduler_config");
    const json ours = json::parse(m.scheduler_config_json);
    for (const auto& [key, value] : ours.items()) {
      if (key == "_class_name") continue;
      ASSERT_TRUE(expected.contains(key)) << key;
      if (value.is_number_float())
        EXPECT_DOUBLE_EQ(value.get<double>(), expected[key].get<double>()) << key;
      else
        EXPECT_EQ(value, expected[key]) << key;
    }
    for (const char* key : {"prediction_type", "beta_start", "beta_end", "beta_schedule", "timestep_spacing",
                            "steps_offset", "clip_sample", "set_alpha_to_one", "num_train_timesteps"})
      EXPECT_TRUE(ours.contains(key)) << key;
    EXPECT_EQ(m.prediction_type, yaml == "v" ? "v_prediction" : "epsilon");
    EXPECT_EQ(m.prediction_type_reason, yaml == "v" ? "tiny-sd2.yaml says parameterization: \"v\""
                                                    : "tiny-sd2.yaml has no parameterization: \"v\"");
  }
}

TEST(Sd2SingleFile, TheFusedQkvIsSplitIntoRowViews) {
  const ModelFiles m = open_model(testing::tiny_sd2_file("v"));
  const SafetensorsFile file(testing::tiny_sd2_file("v"));
  for (int layer = 0; layer < 2; ++layer) {
    const std::string source = "cond_stage_model.model.transformer.resblocks." + std::to_string(layer) + ".attn.";
    const Tensor w = file.read_f32(source + "in_proj_weight"), b = file.read_f32(source + "in_proj_bias");
    const char* parts[] = {"q_proj", "k_proj", "v_proj"};
    for (int i = 0; i < 3; ++i) {
      const std::string name = "text_model.encoder.layers." + std::to_string(layer) + ".self_attn." + parts[i];
      const Tensor wp = m.text_encoder->get(name + ".weight", {64, 64}), bp = m.text_encoder->get(name + ".bias", {64});
      EXPECT_EQ(std::memcmp(wp.data(), w.data() + i * 64 * 64, 64 * 64 * sizeof(float)), 0) << name;
      EXPECT_EQ(std::memcmp(bp.data(), b.data() + i * 64, 64 * sizeof(float)), 0) << name;
    }
  }
  // The dropped last layer and the contrastive head are listed, not loaded.
  for (const char* name : {"cond_stage_model.model.transformer.resblocks.2.attn.in_proj_weight",
                           "cond_stage_model.model.text_projection", "cond_stage_model.model.logit_scale"})
    EXPECT_NE(std::find(m.ignored_tensors.begin(), m.ignored_tensors.end(), name), m.ignored_tensors.end()) << name;
  EXPECT_FALSE(m.text_encoder->contains("text_model.encoder.layers.2.self_attn.q_proj.weight"));
}

TEST(Sd2SingleFile, RowViewsOfFp16AndFp32Tensors) {
  const std::string dir = testing::temp_dir();
  const Tensor t = Tensor::from_vector({6, 2}, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11});
  write_safetensors(dir + "/a.safetensors", {{"w", t}});
  auto file = std::make_shared<const SafetensorsFile>(dir + "/a.safetensors");
  WeightStore store("test");
  store.add_rows("mid", file, "w", 2, 3);
  EXPECT_EQ(store.shape("mid"), (Shape{3, 2}));
  const Tensor mid = store.get("mid", {3, 2});
  for (int i = 0; i < 6; ++i) EXPECT_EQ(mid[i], static_cast<float>(4 + i));
  EXPECT_THROW(store.add_rows("x", file, "w", 4, 3), ModelError);
  EXPECT_THROW(store.add_rows("x", file, "w", -1, 2), ModelError);
  EXPECT_THROW(store.add_rows("x", file, "nope", 0, 1), ModelError);
}

// The name/shape list of a full-size SD 2.1 single file, from the SD 1.5 manifest: the same UNet names with
// linear proj_in/proj_out and 1024-wide cross-attention keys and values, and OpenCLIP ViT-H's 24 layers in
// place of CLIP ViT-L.
std::vector<NamedShape> sd21_tensors() {
  std::ifstream in(testing::fixtures_dir() + "/../tools/sd15_manifest.json");
  if (!in) throw std::runtime_error("cannot open sd15_manifest.json");
  const json manifest = json::parse(in);
  std::vector<NamedShape> out;
  for (const auto& [name, shape_json] : manifest["single_file"].items()) {
    if (name.starts_with("cond_stage_model.")) continue;
    Shape shape = shape_json.get<Shape>();
    if (name.ends_with("proj_in.weight") || name.ends_with("proj_out.weight"))
      if (name.starts_with("model.diffusion_model.")) shape.resize(2);
    if (name.ends_with("attn2.to_k.weight") || name.ends_with("attn2.to_v.weight")) shape[1] = 1024;
    out.push_back({name, shape});
  }
  const std::string p = "cond_stage_model.model.";
  out.push_back({p + "token_embedding.weight", {49408, 1024}});
  out.push_back({p + "positional_embedding", {77, 1024}});
  out.push_back({p + "ln_final.weight", {1024}});
  out.push_back({p + "ln_final.bias", {1024}});
  out.push_back({p + "text_projection", {1024, 1024}});
  out.push_back({p + "logit_scale", {}});
  for (int i = 0; i < 24; ++i) {
    const std::string b = p + "transformer.resblocks." + std::to_string(i) + ".";
    out.push_back({b + "attn.in_proj_weight", {3072, 1024}});
    out.push_back({b + "attn.in_proj_bias", {3072}});
    out.push_back({b + "attn.out_proj.weight", {1024, 1024}});
    out.push_back({b + "attn.out_proj.bias", {1024}});
    for (const char* ln : {"ln_1.", "ln_2."}) {
      out.push_back({b + ln + "weight", {1024}});
      out.push_back({b + ln + "bias", {1024}});
    }
    out.push_back({b + "mlp.c_fc.weight", {4096, 1024}});
    out.push_back({b + "mlp.c_fc.bias", {4096}});
    out.push_back({b + "mlp.c_proj.weight", {1024, 4096}});
    out.push_back({b + "mlp.c_proj.bias", {1024}});
  }
  return out;
}

TEST(Sd2SingleFile, FullSizeSd21Layout) {
  SingleFileHints hints;
  hints.image_size = 768;  // what the rule gives this file (cross-attention 1024 wide, no global_step)
  const SingleFileLayout layout = map_single_file(sd21_tensors(), hints);
  EXPECT_EQ(layout.architecture, "SD 2.x");
  // stabilityai/stable-diffusion-2-1's unet/config.json and text_encoder/config.json.
  const UNetConfig& u = layout.unet_config;
  EXPECT_EQ(u.num_attention_heads, (std::vector<int>{5, 10, 20, 20}));
  EXPECT_EQ(u.block_out_channels, (std::vector<int>{320, 640, 1280, 1280}));
  EXPECT_EQ(u.cross_attention_dim, 1024);
  EXPECT_TRUE(u.use_linear_projection);
  EXPECT_EQ(u.sample_size, 96);
  const ClipTextConfig& t = layout.text_encoder_config;
  EXPECT_EQ(t.num_hidden_layers, 23);
  EXPECT_EQ(t.hidden_size, 1024);
  EXPECT_EQ(t.intermediate_size, 4096);
  EXPECT_EQ(t.num_attention_heads, 16);
  EXPECT_EQ(t.hidden_act, "gelu");
  EXPECT_EQ(t.vocab_size, 49408);
  EXPECT_EQ(t.max_position_embeddings, 77);
  // 23 layers x 16 weights (q/k/v split) + embeddings and final norm.
  EXPECT_EQ(layout.text_encoder.size(), 23u * 16 + 4);
  EXPECT_EQ(layout.vae_config.sample_size, 768);
  for (const MappedTensor& m : layout.text_encoder)
    if (m.name == "text_model.encoder.layers.22.self_attn.v_proj.weight") {
      EXPECT_EQ(m.source, "cond_stage_model.model.transformer.resblocks.22.attn.in_proj_weight");
      EXPECT_EQ(m.first_row, 2048);
      EXPECT_EQ(m.shape, (Shape{1024, 1024}));
    }
}

// ---- prediction type ------------------------------------------------------------------------------------------

TEST(Sd2SingleFile, PredictionTypeFromTheOptionOverTheYaml) {
  // As from_single_file(prediction_type=...) overrides the original config's parameterization.
  const ModelFiles v = open_model(testing::tiny_sd2_file("v"), "", "epsilon");
  EXPECT_EQ(v.prediction_type, "epsilon");
  EXPECT_EQ(v.prediction_type_reason, "--prediction-type (the original config would give v_prediction)");
  EXPECT_EQ(json::parse(v.scheduler_config_json)["prediction_type"], "epsilon");
  EXPECT_EQ(v.unet_config.sample_size, 96);  // set_image_size follows the config, not the option

  const ModelFiles eps = open_model(testing::tiny_sd2_file("eps"), "", "v_prediction");
  EXPECT_EQ(eps.prediction_type, "v_prediction");
  EXPECT_EQ(eps.prediction_type_reason, "--prediction-type (the original config would give epsilon)");
  EXPECT_EQ(json::parse(eps.scheduler_config_json)["prediction_type"], "v_prediction");

  EXPECT_THROW(open_model(testing::tiny_sd2_file("v"), "", "sample"), InvalidArgument);
  EXPECT_THROW(open_model(testing::fixture("tiny-sd"), "", "v_prediction"), InvalidArgument);
}

TEST(Sd2SingleFile, WithoutAYamlDiffusersRuleDecides) {
  // The tiny model's cross-attention is 64 wide: diffusers would pick v1-inference.yaml, epsilon, 512 px.
  const std::string path = testing::tiny_sd2_file("");
  const SafetensorsFile file(path);
  const SingleFileSettings s = single_file_settings(path, file, "");
  EXPECT_EQ(s.prediction_type, "epsilon");
  EXPECT_EQ(s.reason,
            "no .yaml beside the file; diffusers' rule: input_blocks.2.1's cross-attention is not 1024 wide, so "
            "v1-inference.yaml");
  EXPECT_EQ(s.hints.image_size, 512);
  EXPECT_FALSE(s.hints.num_head_channels);
  // Without the yaml's num_head_channels: 16 its 32 channels cannot be split into SD 2.x's 64-wide heads, and the
  // message says what is missing (diffusers would fail on it too).
  try {
    open_model(path);
    FAIL() << "opened without knowing the head width";
  } catch (const ModelError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("32 channels cannot be split into heads of 64 (num_head_channels, v2-inference.yaml's)"),
              std::string::npos)
        << what;
    EXPECT_NE(what.find("put the model's .yaml beside the file"), std::string::npos) << what;
  }
}

// A safetensors file of raw tensors (F32 or I64), for the rule's checkpoints that only need names and shapes.
void write_raw(const std::string& path, const std::vector<std::tuple<std::string, std::string, Shape>>& tensors,
               int64_t value) {
  json header = json::object();
  std::string data;
  for (const auto& [name, dtype, shape] : tensors) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    const size_t bytes = static_cast<size_t>(n) * (dtype == "I64" ? 8 : 4);
    header[name] = {{"dtype", dtype}, {"shape", shape}, {"data_offsets", {data.size(), data.size() + bytes}}};
    std::string block(bytes, '\0');
    if (dtype == "I64") std::memcpy(block.data(), &value, 8);
    data += block;
  }
  std::string h = header.dump();
  h.append((8 - h.size() % 8) % 8, ' ');
  const uint64_t len = h.size();
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(&len), 8);
  out << h << data;
}

TEST(Sd2SingleFile, DiffusersRuleForFilesWithoutAYaml) {
  std::ifstream in(std::string(SDCPU_SOURCE_DIR) + "/tests/goldens/tiny-sd2/prediction_rule.json");
  const json rule = json::parse(in)["cases"];
  const std::string dir = testing::temp_dir();
  const std::string to_k = "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight";
  struct Case {
    std::string name;
    int64_t width;
    std::optional<int64_t> step;
  };
  for (const Case& c :
       {Case{"to_k width 1024", 1024, std::nullopt}, Case{"to_k width 1024, global_step 875000", 1024, 875000},
        Case{"to_k width 1024, global_step 100", 1024, 100}, Case{"to_k width 768", 768, std::nullopt}}) {
    SCOPED_TRACE(c.name);
    ASSERT_TRUE(rule.contains(c.name));
    const json& want = rule[c.name];
    std::vector<std::tuple<std::string, std::string, Shape>> tensors = {{to_k, "F32", {4, c.width}}};
    if (c.step) tensors.emplace_back("global_step", "I64", Shape{});
    const std::string path = dir + "/rule.safetensors";
    write_raw(path, tensors, c.step.value_or(0));
    const SafetensorsFile file(path);
    const SingleFileSettings s = single_file_settings(path, file, "");
    const bool v2 = want["config_url"].get<std::string>().find("v2-inference-v.yaml") != std::string::npos;
    if (!v2) {
      EXPECT_EQ(c.width, 768);
      EXPECT_EQ(s.prediction_type, "epsilon");  // v1-inference.yaml has no parameterization
      EXPECT_EQ(s.hints.image_size, 512);
      continue;
    }
    EXPECT_EQ(s.prediction_type, want["prediction_type"].get<std::string>());
    EXPECT_EQ(s.hints.image_size, want["image_size"].get<int>());
  }
}

TEST(Sd2SingleFile, GlobalStepOfSd2BaseTurnsAVYamlIntoEpsilon) {
  // create_scheduler_from_ldm and set_image_size with a "v" config: global_step 875000 means 512 px epsilon.
  const std::string dir = testing::temp_dir();
  write_raw(dir + "/base.safetensors", {{"global_step", "I64", Shape{}}}, 875000);
  std::filesystem::copy_file(std::string(SDCPU_SOURCE_DIR) + "/tests/goldens/tiny-sd2/v.yaml", dir + "/base.yaml");
  const SafetensorsFile file(dir + "/base.safetensors");
  const SingleFileSettings s = single_file_settings(dir + "/base.safetensors", file, "");
  EXPECT_EQ(s.prediction_type, "epsilon");
  EXPECT_EQ(s.reason, "base.yaml says parameterization: \"v\", but global_step 875000 is SD 2.x base");
  EXPECT_EQ(s.hints.image_size, 512);
  EXPECT_EQ(s.hints.num_head_channels, 16);
}

TEST(Sd2SingleFile, YamlReader) {
  const std::string dir = testing::temp_dir();
  auto write = [&](const std::string& text) {
    std::ofstream(dir + "/c.yaml") << text;
    return dir + "/c.yaml";
  };
  const OriginalConfig v = read_original_config(std::string(SDCPU_SOURCE_DIR) + "/tests/goldens/tiny-sd2/v.yaml");
  EXPECT_EQ(v.parameterization, "v");
  EXPECT_EQ(v.linear_start, 0.00085);
  EXPECT_EQ(v.linear_end, 0.012);
  EXPECT_EQ(v.scale_factor, 0.18215);
  EXPECT_EQ(v.num_head_channels, 16);
  EXPECT_FALSE(v.num_heads);
  // Keys elsewhere in the tree are not these keys.
  const OriginalConfig other = read_original_config(write("parameterization: \"v\"\nmodel:\n  parameterization: v\n"));
  EXPECT_FALSE(other.parameterization);
  try {
    read_original_config(write("model:\n  params:\n    parameterization: \"x0\"\n"));
    FAIL() << "an unknown parameterization was accepted";
  } catch (const ModelError& e) {
    EXPECT_NE(std::string(e.what()).find("c.yaml:3: model.params.parameterization is 'x0'"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(read_original_config(write("model:\n  params:\n    linear_start: fast\n")), ModelError);
  EXPECT_THROW(read_original_config(dir + "/missing.yaml"), ModelError);
}

// ---- broken files ---------------------------------------------------------------------------------------------

// The tiny file with `edit` applied to its tensors, opened; returns the ModelError's message ("" if it opened).
std::string open_error(const std::function<void(std::vector<std::pair<std::string, Tensor>>&)>& edit,
                       const std::string& yaml = "v") {
  auto tensors = testing::tiny_sd2_tensors();
  edit(tensors);
  const std::string path = testing::write_tiny_sd2(testing::temp_dir(), yaml, tensors);
  try {
    open_model(path);
  } catch (const ModelError& e) {
    return e.what();
  }
  return "";
}

Tensor& tensor(std::vector<std::pair<std::string, Tensor>>& tensors, const std::string& name) {
  for (auto& [n, t] : tensors)
    if (n == name) return t;
  throw std::runtime_error("no tensor " + name);
}

TEST(Sd2SingleFile, BrokenFilesAreRefused) {
  const std::string in_proj = "cond_stage_model.model.transformer.resblocks.1.attn.in_proj_weight";
  // Rows not divisible by 3.
  std::string e = open_error([&](auto& t) { tensor(t, in_proj) = Tensor({190, 64}); });
  EXPECT_NE(e.find("resblocks.1.attn.in_proj_weight' has shape [190, 64], expected [192, 64]"), std::string::npos) << e;
  EXPECT_NE(e.find("190 rows cannot be split into q, k and v"), std::string::npos) << e;
  // Three times the wrong width.
  e = open_error([&](auto& t) { tensor(t, in_proj) = Tensor({96, 32}); });
  EXPECT_NE(e.find("has shape [96, 32], expected [192, 64]"), std::string::npos) << e;
  // A bias of the wrong length.
  e = open_error(
      [&](auto& t) { tensor(t, "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_bias") = Tensor({64}); });
  EXPECT_NE(e.find("in_proj_bias' has shape [64], expected [192]"), std::string::npos) << e;
  // A missing resblock in the middle.
  e = open_error([&](auto& t) {
    std::erase_if(t, [](const auto& p) { return p.first.find(".resblocks.1.") != std::string::npos; });
  });
  EXPECT_NE(e.find("transformer.resblocks.1 is missing"), std::string::npos) << e;
  // No resblocks at all.
  e = open_error([&](auto& t) {
    std::erase_if(t, [](const auto& p) { return p.first.find(".resblocks.") != std::string::npos; });
  });
  EXPECT_NE(e.find("there are no transformer.resblocks"), std::string::npos) << e;
  // One resblock only: nothing would be left after dropping the last.
  e = open_error([&](auto& t) {
    std::erase_if(t, [](const auto& p) {
      return p.first.find(".resblocks.1.") != std::string::npos || p.first.find(".resblocks.2.") != std::string::npos;
    });
  });
  EXPECT_NE(e.find("needs at least two"), std::string::npos) << e;
  // No token embedding.
  e = open_error([&](auto& t) {
    std::erase_if(t, [](const auto& p) { return p.first == "cond_stage_model.model.token_embedding.weight"; });
  });
  EXPECT_NE(e.find("there is no token_embedding.weight"), std::string::npos) << e;
  // A yaml with an unknown parameterization.
  const std::string dir = testing::temp_dir() + "/x0";
  const std::string path = testing::write_tiny_sd2(dir, "", testing::tiny_sd2_tensors());
  std::ofstream(dir + "/tiny-sd2.yaml") << "model:\n  params:\n    parameterization: \"x0\"\n";
  try {
    open_model(path);
    FAIL() << "a yaml with parameterization x0 was accepted";
  } catch (const ModelError& err) {
    EXPECT_NE(std::string(err.what()).find("tiny-sd2.yaml:3: model.params.parameterization is 'x0'"), std::string::npos)
        << err.what();
  }
}

}  // namespace
}  // namespace sdcpu
