// The single-file key mapping as a pure function, checked against every tensor name and shape of the
// real Stable Diffusion 1.5 (../shared/tools/sd15_manifest.json) without any weights.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "config_compare.h"
#include "core/error.h"
#include "formats/single_file_keys.h"
#include "test_support.h"

namespace sdcpu {
namespace {

using nlohmann::json;
using NameShapes = std::set<std::pair<std::string, Shape>>;

const json& manifest() {
  static const json m = [] {
    std::ifstream in(testing::fixtures_dir() + "/../tools/sd15_manifest.json");
    if (!in) throw std::runtime_error("cannot open sd15_manifest.json");
    return json::parse(in);
  }();
  return m;
}

// Trailing 1 dims dropped: the original VAE attention's [C, C, 1, 1] convolutions are diffusers' [C, C]
// linears (WeightStore::get compares shapes the same way).
Shape strip(Shape s) {
  while (s.size() > 1 && s.back() == 1) s.pop_back();
  return s;
}

std::vector<NamedShape> single_file_tensors() {
  std::vector<NamedShape> out;
  for (const auto& [name, shape] : manifest()["single_file"].items()) out.push_back({name, shape.get<Shape>()});
  return out;
}

NameShapes diffusers_set(const char* component) {
  NameShapes out;
  for (const auto& [name, shape] : manifest()["diffusers"][component].items())
    out.insert({name, strip(shape.get<Shape>())});
  return out;
}

NameShapes mapped_set(const std::vector<MappedTensor>& tensors) {
  NameShapes out;
  for (const auto& t : tensors) out.insert({t.name, strip(t.shape)});
  return out;
}

std::map<std::string, std::string> source_to_name(const SingleFileLayout& layout) {
  std::map<std::string, std::string> out;
  for (const auto* c : {&layout.unet, &layout.vae, &layout.text_encoder})
    for (const auto& t : *c) out[t.source] = t.name;
  return out;
}

void expect_model_error(const std::vector<NamedShape>& tensors, const std::string& needle) {
  try {
    map_single_file(tensors);
    FAIL() << "accepted; expected an error mentioning '" << needle << "'";
  } catch (const ModelError& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(SingleFileKeys, Sd15ManifestMapsToExactlyTheDiffusersNamesAndShapes) {
  const auto tensors = single_file_tensors();
  const SingleFileLayout layout = map_single_file(tensors);
  EXPECT_EQ(layout.architecture, "SD 1.x");
  EXPECT_EQ(mapped_set(layout.unet), diffusers_set("unet"));
  EXPECT_EQ(mapped_set(layout.vae), diffusers_set("vae"));
  EXPECT_EQ(mapped_set(layout.text_encoder), diffusers_set("text_encoder"));
  EXPECT_TRUE(layout.ignored.empty());
  EXPECT_EQ(layout.unet.size() + layout.vae.size() + layout.text_encoder.size(), tensors.size());
  // Every file tensor is used at most once.
  EXPECT_EQ(source_to_name(layout).size(), tensors.size());
}

TEST(SingleFileKeys, Sd15ManifestConfigsMatchTheDiffusersConfigs) {
  const SingleFileLayout layout = map_single_file(single_file_tensors());
  const json& configs = manifest()["configs"];
  testing::expect_same_config(layout.unet_config, parse_unet_config(configs["unet"].dump()));
  testing::expect_same_config(layout.vae_config, parse_vae_config(configs["vae"].dump()));
  // SD 1.5's text_encoder/config.json carries transformers' placeholder token ids (bos 0, eos 2), not
  // CLIP's (49406, 49407); they cannot come from shapes and do not change last_hidden_state.
  testing::expect_same_config(layout.text_encoder_config, parse_clip_text_config(configs["text_encoder"].dump()),
                              {"bos_token_id", "eos_token_id"});
  EXPECT_EQ(layout.unet_config.num_attention_heads, (std::vector<int>{8, 8, 8, 8}));
  EXPECT_FALSE(layout.unet_config.use_linear_projection);
  EXPECT_EQ(layout.text_encoder_config.num_attention_heads, 12);
  EXPECT_EQ(layout.text_encoder_config.hidden_act, "quick_gelu");
  EXPECT_FLOAT_EQ(layout.vae_config.scaling_factor, 0.18215f);
  // The derived configs are also given as config.json text.
  EXPECT_EQ(json::parse(layout.unet_config_json)["cross_attention_dim"], 768);
  EXPECT_EQ(json::parse(layout.text_encoder_config_json)["num_hidden_layers"], 12);
  EXPECT_EQ(json::parse(layout.vae_config_json)["latent_channels"], 4);
}

// Names whose shapes are equal to their neighbours' (so the set comparison cannot tell them apart).
TEST(SingleFileKeys, Sd15SpotChecks) {
  const SingleFileLayout layout = map_single_file(single_file_tensors());
  const auto m = source_to_name(layout);
  const std::pair<const char*, const char*> expected[] = {
      {"model.diffusion_model.time_embed.0.weight", "time_embedding.linear_1.weight"},
      {"model.diffusion_model.time_embed.2.bias", "time_embedding.linear_2.bias"},
      {"model.diffusion_model.input_blocks.0.0.weight", "conv_in.weight"},
      {"model.diffusion_model.input_blocks.1.0.in_layers.0.weight", "down_blocks.0.resnets.0.norm1.weight"},
      {"model.diffusion_model.input_blocks.2.1.proj_in.weight", "down_blocks.0.attentions.1.proj_in.weight"},
      {"model.diffusion_model.input_blocks.3.0.op.weight", "down_blocks.0.downsamplers.0.conv.weight"},
      {"model.diffusion_model.input_blocks.4.0.skip_connection.weight", "down_blocks.1.resnets.0.conv_shortcut.weight"},
      {"model.diffusion_model.input_blocks.11.0.out_layers.3.bias", "down_blocks.3.resnets.1.conv2.bias"},
      {"model.diffusion_model.middle_block.0.emb_layers.1.weight", "mid_block.resnets.0.time_emb_proj.weight"},
      {"model.diffusion_model.middle_block.1.transformer_blocks.0.attn2.to_k.weight",
       "mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight"},
      {"model.diffusion_model.middle_block.2.out_layers.0.weight", "mid_block.resnets.1.norm2.weight"},
      {"model.diffusion_model.output_blocks.0.0.in_layers.2.weight", "up_blocks.0.resnets.0.conv1.weight"},
      {"model.diffusion_model.output_blocks.2.1.conv.weight", "up_blocks.0.upsamplers.0.conv.weight"},
      {"model.diffusion_model.output_blocks.5.2.conv.bias", "up_blocks.1.upsamplers.0.conv.bias"},
      {"model.diffusion_model.output_blocks.8.2.conv.weight", "up_blocks.2.upsamplers.0.conv.weight"},
      {"model.diffusion_model.output_blocks.3.1.norm.weight", "up_blocks.1.attentions.0.norm.weight"},
      {"model.diffusion_model.output_blocks.11.1.proj_out.weight", "up_blocks.3.attentions.2.proj_out.weight"},
      {"model.diffusion_model.output_blocks.11.1.transformer_blocks.0.ff.net.0.proj.weight",
       "up_blocks.3.attentions.2.transformer_blocks.0.ff.net.0.proj.weight"},
      {"model.diffusion_model.out.0.weight", "conv_norm_out.weight"},
      {"model.diffusion_model.out.2.bias", "conv_out.bias"},
      {"first_stage_model.encoder.down.0.block.1.conv2.weight", "encoder.down_blocks.0.resnets.1.conv2.weight"},
      {"first_stage_model.encoder.down.2.downsample.conv.weight", "encoder.down_blocks.2.downsamplers.0.conv.weight"},
      {"first_stage_model.encoder.mid.block_2.norm1.bias", "encoder.mid_block.resnets.1.norm1.bias"},
      {"first_stage_model.encoder.mid.attn_1.q.weight", "encoder.mid_block.attentions.0.to_q.weight"},
      {"first_stage_model.encoder.mid.attn_1.proj_out.bias", "encoder.mid_block.attentions.0.to_out.0.bias"},
      {"first_stage_model.decoder.mid.attn_1.norm.weight", "decoder.mid_block.attentions.0.group_norm.weight"},
      {"first_stage_model.encoder.norm_out.weight", "encoder.conv_norm_out.weight"},
      {"first_stage_model.decoder.up.3.block.0.conv1.weight", "decoder.up_blocks.0.resnets.0.conv1.weight"},
      {"first_stage_model.decoder.up.2.block.2.conv2.weight", "decoder.up_blocks.1.resnets.2.conv2.weight"},
      {"first_stage_model.decoder.up.3.upsample.conv.weight", "decoder.up_blocks.0.upsamplers.0.conv.weight"},
      {"first_stage_model.decoder.up.2.upsample.conv.weight", "decoder.up_blocks.1.upsamplers.0.conv.weight"},
      {"first_stage_model.decoder.up.1.block.0.nin_shortcut.weight",
       "decoder.up_blocks.2.resnets.0.conv_shortcut.weight"},
      {"first_stage_model.quant_conv.weight", "quant_conv.weight"},
      {"first_stage_model.post_quant_conv.bias", "post_quant_conv.bias"},
      {"cond_stage_model.transformer.text_model.encoder.layers.11.mlp.fc2.weight",
       "text_model.encoder.layers.11.mlp.fc2.weight"},
      {"cond_stage_model.transformer.text_model.final_layer_norm.bias", "text_model.final_layer_norm.bias"},
  };
  for (const auto& [source, name] : expected) {
    auto it = m.find(source);
    ASSERT_NE(it, m.end()) << source << " is not mapped";
    EXPECT_EQ(it->second, name) << source;
  }
  // The file's shape is kept: [C, C, 1, 1] where diffusers stores [C, C].
  bool found = false;
  for (const auto& t : layout.vae) {
    if (t.name != "decoder.mid_block.attentions.0.to_v.weight") continue;
    EXPECT_EQ(t.shape, (Shape{512, 512, 1, 1}));
    found = true;
  }
  EXPECT_TRUE(found);
}

TEST(SingleFileKeys, TensorsOutsideTheComponentsAreIgnored) {
  auto tensors = single_file_tensors();
  const std::vector<std::string> extra = {"model_ema.decay",
                                          "model_ema.num_updates",
                                          "model_ema.diffusion_modelinput_blocks00weight",
                                          "alphas_cumprod",
                                          "betas",
                                          "log_one_minus_alphas_cumprod",
                                          "posterior_mean_coef1",
                                          "cond_stage_model.transformer.text_model.embeddings.position_ids",
                                          "first_stage_model.loss.logvar",
                                          "lvlb_weights"};
  for (const auto& name : extra) tensors.push_back({name, {1000}});
  const SingleFileLayout layout = map_single_file(tensors);
  EXPECT_EQ(layout.ignored, extra);
  EXPECT_EQ(mapped_set(layout.unet), diffusers_set("unet"));
  EXPECT_EQ(mapped_set(layout.text_encoder), diffusers_set("text_encoder"));
}

TEST(SingleFileKeys, TextEncoderWithoutTextModelLevel) {
  auto tensors = single_file_tensors();
  const std::string with = "cond_stage_model.transformer.text_model.", without = "cond_stage_model.transformer.";
  for (auto& t : tensors)
    if (t.name.starts_with(with)) t.name = without + t.name.substr(with.size());
  const SingleFileLayout layout = map_single_file(tensors);
  EXPECT_EQ(mapped_set(layout.text_encoder), diffusers_set("text_encoder"));
  EXPECT_EQ(layout.text_encoder_config.num_hidden_layers, 12);
}

TEST(SingleFileKeys, TwoTensorsForOneWeightIsAnError) {
  auto tensors = single_file_tensors();
  tensors.push_back({"cond_stage_model.transformer.final_layer_norm.weight", {768}});
  expect_model_error(tensors, "are both 'text_model.final_layer_norm.weight'");
}

TEST(SingleFileKeys, RefusesOtherFamiliesClearly) {
  // SD 2.x single files load (test_formats_sd2_single_file.cpp), but not with two text encoders.
  auto sd2 = single_file_tensors();
  sd2.push_back({"cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight", {3072, 1024}});
  expect_model_error(sd2, "both an OpenAI CLIP (cond_stage_model.transformer.*) and an OpenCLIP");
  auto xl = single_file_tensors();
  xl.push_back({"conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight", {3840, 1280}});
  expect_model_error(xl, "SDXL");
}

TEST(SingleFileKeys, NotAStableDiffusionFile) {
  expect_model_error({{"foo.weight", {3, 3}}}, "no Stable Diffusion tensors");
  expect_model_error({}, "no Stable Diffusion tensors");
  expect_model_error({{"down_blocks.0.resnets.0.conv1.weight", {320, 320, 3, 3}}}, "open the folder instead");
  auto no_vae = single_file_tensors();
  std::erase_if(no_vae, [](const NamedShape& t) { return t.name.starts_with("first_stage_model."); });
  expect_model_error(no_vae, "no VAE tensors");
}

TEST(SingleFileKeys, BrokenUNetLayoutIsAnError) {
  auto tensors = single_file_tensors();
  std::erase_if(tensors,
                [](const NamedShape& t) { return t.name.starts_with("model.diffusion_model.output_blocks.11."); });
  expect_model_error(tensors, "unexpected UNet layout");
  auto no_conv_in = single_file_tensors();
  std::erase_if(no_conv_in,
                [](const NamedShape& t) { return t.name == "model.diffusion_model.input_blocks.0.0.weight"; });
  expect_model_error(no_conv_in, "conv_in.weight");
}

}  // namespace
}  // namespace sdcpu
