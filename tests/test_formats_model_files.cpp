// open_model on the tiny fixtures: the diffusers folder and the single-file checkpoint of the same model
// must give the same configurations, the same tensor names and shapes, and the same values up to the
// fp16 rounding of the single file. Plus weight-file selection and the error messages.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <set>

#include "config_compare.h"
#include "core/error.h"
#include "formats/model_files.h"
#include "formats/single_file.h"
#include "test_support.h"

namespace sdcpu {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

Shape strip(Shape s) {
  while (s.size() > 1 && s.back() == 1) s.pop_back();
  return s;
}

// fp32 -> fp16 -> fp32 with round-to-nearest-even, as torch's .half() does (no overflow in weights).
float round_to_f16(float x) {
  if (x == 0 || !std::isfinite(x)) return x;
  int exp = 0;
  std::frexp(x, &exp);  // |x| in [2^(exp-1), 2^exp): fp16 keeps 10 bits below the leading one
  const float quantum = std::ldexp(1.0f, std::max(exp - 11, -24));  // -24: fp16 subnormal spacing
  return std::nearbyint(x / quantum) * quantum;
}

void write_file(const fs::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary);
  out << bytes;
}

// A copy of the tiny folder in a temp dir: JSON/text files copied, weights symlinked (cheap).
std::string copy_tiny_folder() {
  const fs::path src = testing::fixture("tiny-sd");
  const fs::path dst = fs::path(testing::temp_dir()) / "tiny-sd";
  for (const auto& e : fs::recursive_directory_iterator(src)) {
    const fs::path to = dst / fs::relative(e.path(), src);
    if (e.is_directory()) {
      fs::create_directories(to);
    } else {
      fs::create_directories(to.parent_path());
      if (e.path().extension() == ".safetensors")
        fs::create_symlink(e.path(), to);
      else
        fs::copy_file(e.path(), to);
    }
  }
  return dst.string();
}

// Expects open_model(path) to throw ModelError whose message contains every needle.
void expect_open_error(const std::string& path, const std::vector<std::string>& needles,
                       const std::string& variant = "") {
  try {
    open_model(path, variant);
    FAIL() << "opened " << path << "; expected a ModelError";
  } catch (const ModelError& e) {
    for (const auto& n : needles) EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << e.what();
  }
}

void expect_same_names_and_shapes(const WeightStore& a, const WeightStore& b) {
  EXPECT_EQ(a.names(), b.names()) << a.component();
  for (const auto& name : a.names()) {
    if (b.contains(name)) {
      EXPECT_EQ(strip(a.shape(name)), strip(b.shape(name))) << a.component() << " " << name;
    }
  }
}

// Each single-file value is exactly the fp16 rounding of the folder's fp32 value.
void expect_fp16_rounded_values(const WeightStore& folder, const WeightStore& single) {
  size_t checked = 0;
  for (const auto& name : folder.names()) {
    if (!single.contains(name)) continue;
    const Shape shape = folder.shape(name);
    const Tensor a = folder.get(name, shape), b = single.get(name, shape);
    int64_t mismatches = 0, first = -1;
    for (int64_t i = 0; i < a.numel(); ++i)
      if (round_to_f16(a[i]) != b[i] && mismatches++ == 0) first = i;
    EXPECT_EQ(mismatches, 0) << folder.component() << " " << name << " first at " << first << ": " << a[first] << " vs "
                             << b[first];
    ++checked;
  }
  EXPECT_EQ(checked, folder.size());
}

TEST(ModelFiles, TinyFolderAndSingleFileAreTheSameModel) {
  const ModelFiles folder = open_model(testing::fixture("tiny-sd"));
  const ModelFiles single = open_model(testing::fixture("tiny-sd.safetensors"));
  EXPECT_EQ(folder.layout, "diffusers folder");
  EXPECT_EQ(single.layout, "single file");
  EXPECT_EQ(folder.architecture, "SD 1.x");
  EXPECT_EQ(single.architecture, "SD 1.x");

  // sample_size (the default resolution) is not visible in tensor shapes: the single file gets SD 1.x's
  // 512 px where the tiny folder says 128 px.
  testing::expect_same_config(folder.unet_config, single.unet_config, {"sample_size"});
  testing::expect_same_config(folder.vae_config, single.vae_config, {"sample_size"});
  testing::expect_same_config(folder.text_encoder_config, single.text_encoder_config);
  EXPECT_EQ(single.unet_config.sample_size, 64);
  EXPECT_EQ(single.vae_config.sample_size, 512);

  expect_same_names_and_shapes(*folder.unet, *single.unet);
  expect_same_names_and_shapes(*folder.vae, *single.vae);
  expect_same_names_and_shapes(*folder.text_encoder, *single.text_encoder);
  expect_fp16_rounded_values(*folder.unet, *single.unet);
  expect_fp16_rounded_values(*folder.vae, *single.vae);
  expect_fp16_rounded_values(*folder.text_encoder, *single.text_encoder);

  EXPECT_TRUE(single.ignored_tensors.empty());
  EXPECT_EQ(folder.tokenizer_dir, testing::fixture("tiny-sd") + "/tokenizer");
  EXPECT_EQ(single.tokenizer_dir, "");
  EXPECT_EQ(folder.weight_files.size(), 3u);
  EXPECT_EQ(single.weight_files, std::vector<std::string>{testing::fixture("tiny-sd.safetensors")});

  // The folder's scheduler config is its file; the single file gets the one diffusers' from_single_file builds:
  // SCHEDULER_DEFAULT_CONFIG completed by create_scheduler_from_ldm for SD 1.x, loaded into a DDIMScheduler.
  EXPECT_EQ(folder.scheduler_config_path, testing::fixture("tiny-sd") + "/scheduler/scheduler_config.json");
  EXPECT_EQ(single.scheduler_config_path, "");
  const json expected = {{"_class_name", "DDIMScheduler"},
                         {"beta_schedule", "scaled_linear"},
                         {"beta_start", 0.00085},
                         {"beta_end", 0.012},
                         {"interpolation_type", "linear"},
                         {"num_train_timesteps", 1000},
                         {"prediction_type", "epsilon"},
                         {"sample_max_value", 1.0},
                         {"set_alpha_to_one", false},
                         {"skip_prk_steps", true},
                         {"steps_offset", 1},
                         {"timestep_spacing", "leading"},
                         {"clip_sample", false}};
  EXPECT_EQ(json::parse(single.scheduler_config_json), expected);
}

TEST(ModelFiles, VaeAttentionKeepsTheFileShape) {
  const ModelFiles single = open_model(testing::fixture("tiny-sd.safetensors"));
  const ModelFiles folder = open_model(testing::fixture("tiny-sd"));
  const std::string name = "decoder.mid_block.attentions.0.to_q.weight";
  EXPECT_EQ(single.vae->shape(name), (Shape{64, 64, 1, 1}));
  EXPECT_EQ(folder.vae->shape(name), (Shape{64, 64}));
  EXPECT_EQ(single.vae->get(name, {64, 64}).shape(), (Shape{64, 64}));
}

TEST(ModelFiles, SingleFileWithLegacyClipKeysAndExtraTensors) {
  // Rewrite the tiny checkpoint as older ones look: CLIP keys without `text_model.`, plus EMA and
  // schedule tensors that belong to no component.
  SafetensorsFile src(testing::fixture("tiny-sd.safetensors"));
  std::vector<std::pair<std::string, Tensor>> tensors;
  const std::string with = "cond_stage_model.transformer.text_model.", without = "cond_stage_model.transformer.";
  for (const auto& t : src.tensors()) {
    std::string name = t.name;
    if (name.starts_with(with)) name = without + name.substr(with.size());
    tensors.emplace_back(name, src.read_f32(t));
  }
  const std::set<std::string> extra = {"alphas_cumprod", "model_ema.decay", "posterior_variance",
                                       "cond_stage_model.transformer.embeddings.position_ids"};
  for (const auto& name : extra) tensors.emplace_back(name, Tensor::zeros({77}));
  const std::string path = testing::temp_dir() + "/legacy.safetensors";
  write_safetensors(path, tensors);

  const ModelFiles legacy = open_model(path);
  const ModelFiles folder = open_model(testing::fixture("tiny-sd"));
  EXPECT_EQ(std::set<std::string>(legacy.ignored_tensors.begin(), legacy.ignored_tensors.end()), extra);
  expect_same_names_and_shapes(*folder.text_encoder, *legacy.text_encoder);
  expect_fp16_rounded_values(*folder.text_encoder, *legacy.text_encoder);
  testing::expect_same_config(folder.text_encoder_config, legacy.text_encoder_config);
}

TEST(ModelFiles, Fp16VariantIsTheFallbackAndCanBeAsked) {
  const std::string dir = copy_tiny_folder();
  const fs::path unet = fs::path(dir) / "unet";
  // Only the fp16 variant: chosen without asking, as diffusers' hub repositories often ship.
  fs::rename(unet / "diffusion_pytorch_model.safetensors", unet / "diffusion_pytorch_model.fp16.safetensors");
  ModelFiles m = open_model(dir);
  EXPECT_EQ(m.weight_files[0], (unet / "diffusion_pytorch_model.fp16.safetensors").string());
  EXPECT_EQ(m.unet->size(), open_model(testing::fixture("tiny-sd")).unet->size());

  // Both present: the plain file by default, the variant when asked.
  fs::create_symlink(testing::fixture("tiny-sd/unet/diffusion_pytorch_model.safetensors"),
                     unet / "diffusion_pytorch_model.safetensors");
  EXPECT_EQ(open_model(dir).weight_files[0], (unet / "diffusion_pytorch_model.safetensors").string());
  m = open_model(dir, "fp16");
  EXPECT_EQ(m.weight_files[0], (unet / "diffusion_pytorch_model.fp16.safetensors").string());
  // Components without the variant fall back to their plain weights.
  EXPECT_EQ(m.weight_files[1], (fs::path(dir) / "vae" / "diffusion_pytorch_model.safetensors").string());
}

TEST(ModelFiles, ShardedWeights) {
  const std::string dir = copy_tiny_folder();
  const fs::path unet = fs::path(dir) / "unet";
  fs::remove(unet / "diffusion_pytorch_model.safetensors");
  const ModelFiles ref = open_model(testing::fixture("tiny-sd"));
  std::vector<std::pair<std::string, Tensor>> shards[2];
  json weight_map;
  size_t i = 0;
  for (const auto& name : ref.unet->names()) {
    const int s = (i++ % 2);
    shards[s].emplace_back(name, ref.unet->get(name, ref.unet->shape(name)));
    weight_map[name] = "diffusion_pytorch_model-0000" + std::to_string(s + 1) + "-of-00002.safetensors";
  }
  write_safetensors((unet / "diffusion_pytorch_model-00001-of-00002.safetensors").string(), shards[0]);
  write_safetensors((unet / "diffusion_pytorch_model-00002-of-00002.safetensors").string(), shards[1]);
  write_file(unet / "diffusion_pytorch_model.safetensors.index.json",
             json{{"metadata", {{"total_size", 0}}}, {"weight_map", weight_map}}.dump());

  const ModelFiles m = open_model(dir);
  EXPECT_EQ(m.unet->names(), ref.unet->names());
  for (const auto& name : ref.unet->names()) {
    const Shape shape = ref.unet->shape(name);
    EXPECT_EQ(m.unet->get(name, shape).to_vector(), ref.unet->get(name, shape).to_vector()) << name;
  }

  // A shard outside the folder is refused.
  weight_map[ref.unet->names()[0]] = "../vae/diffusion_pytorch_model.safetensors";
  write_file(unet / "diffusion_pytorch_model.safetensors.index.json", json{{"weight_map", weight_map}}.dump());
  expect_open_error(dir, {"invalid shard file"});
}

TEST(ModelFilesErrors, FolderWithoutModelIndex) {
  expect_open_error(testing::temp_dir(), {"model_index.json is missing", "not a diffusers pipeline folder"});
}

TEST(ModelFilesErrors, MissingComponentWeights) {
  const std::string dir = copy_tiny_folder();
  fs::remove(fs::path(dir) / "unet" / "diffusion_pytorch_model.safetensors");
  expect_open_error(dir, {"no unet weights", "unet/diffusion_pytorch_model.safetensors"});
}

TEST(ModelFilesErrors, MissingComponentConfig) {
  const std::string dir = copy_tiny_folder();
  fs::remove(fs::path(dir) / "vae" / "config.json");
  expect_open_error(dir, {"vae/config.json is missing"});
}

TEST(ModelFilesErrors, MissingSchedulerConfig) {
  const std::string dir = copy_tiny_folder();
  fs::remove(fs::path(dir) / "scheduler" / "scheduler_config.json");
  expect_open_error(dir, {"scheduler/scheduler_config.json is missing"});
}

TEST(ModelFilesErrors, PickleWeightsInFolder) {
  const std::string dir = copy_tiny_folder();
  const fs::path te = fs::path(dir) / "text_encoder";
  fs::remove(te / "model.safetensors");
  write_file(te / "model.bin", "PK\x03\x04 not really a zip");
  expect_open_error(dir, {"text_encoder/model.bin", "pickle", "safetensors"});
}

TEST(ModelFilesErrors, NotAStableDiffusionIndex) {
  const std::string dir = copy_tiny_folder();
  const fs::path index = fs::path(dir) / "model_index.json";
  json j = json::parse(std::ifstream(index));
  j["_class_name"] = "StableDiffusionXLPipeline";
  write_file(index, j.dump());
  expect_open_error(dir, {"SDXL", "has no text_encoder_2 component"});
  j["_class_name"] = "StableDiffusionXLImg2ImgPipeline";
  write_file(index, j.dump());
  expect_open_error(dir, {"StableDiffusionXLImg2ImgPipeline is not supported"});
  j["_class_name"] = "StableDiffusionPipeline";
  j["unet"] = {"diffusers", "UNet2DModel"};
  write_file(index, j.dump());
  expect_open_error(dir, {"the unet is a UNet2DModel"});
  j.erase("unet");
  write_file(index, j.dump());
  expect_open_error(dir, {"has no unet component"});
  write_file(index, "[1, 2");
  expect_open_error(dir, {"model_index.json is not valid JSON"});
}

// The tiny SDXL folder (tests/oracle/make_sdxl_goldens.py) copied with its links, to be damaged.
std::string copy_tiny_sdxl() {
  const fs::path dst = fs::path(testing::temp_dir()) / "tiny-sdxl";
  fs::copy(testing::tiny_sdxl_dir(), dst, fs::copy_options::recursive | fs::copy_options::copy_symlinks);
  return dst.string();
}

void edit_json(const fs::path& file, const std::function<void(json&)>& edit) {
  json j = json::parse(std::ifstream(file));
  edit(j);
  write_file(file, j.dump());
}

TEST(ModelFilesSdxl, OpensWithSecondEncoderAndTokenizer) {
  const ModelFiles m = open_model(testing::tiny_sdxl_dir());
  EXPECT_EQ(m.architecture, "SDXL");
  ASSERT_TRUE(m.text_encoder_2);
  EXPECT_TRUE(m.text_encoder_2->contains("text_projection.weight"));  // from the second shard
  EXPECT_TRUE(m.text_encoder_2->contains("text_model.final_layer_norm.weight"));
  EXPECT_EQ(m.text_encoder_2_config.projection_dim, 32);
  EXPECT_EQ(m.text_encoder_2_config.hidden_act, "gelu");
  EXPECT_FALSE(m.tokenizer_2_dir.empty());
  EXPECT_TRUE(m.force_zeros_for_empty_prompt);
  EXPECT_TRUE(m.unet_config.has_text_time());
  EXPECT_EQ(m.unet_config.projection_class_embeddings_input_dim, 32 + 6 * 8);
}

TEST(ModelFilesSdxl, ForceZerosFalseIsRead) {
  const std::string dir = copy_tiny_sdxl();
  edit_json(fs::path(dir) / "model_index.json", [](json& j) { j["force_zeros_for_empty_prompt"] = false; });
  EXPECT_FALSE(open_model(dir).force_zeros_for_empty_prompt);
}

TEST(ModelFilesSdxl, MissingSecondEncoderOrTokenizerIsRefused) {
  {
    const std::string dir = copy_tiny_sdxl();
    fs::remove_all(fs::path(dir) / "text_encoder_2");
    expect_open_error(dir, {"text_encoder_2/config.json is missing"});
  }
  {
    const std::string dir = copy_tiny_sdxl();
    edit_json(fs::path(dir) / "model_index.json", [](json& j) { j.erase("text_encoder_2"); });
    expect_open_error(dir, {"has no text_encoder_2 component", "SDXL"});
  }
  {
    const std::string dir = copy_tiny_sdxl();
    fs::remove(fs::path(dir) / "text_encoder_2" / "model-00002-of-00002.safetensors");
    expect_open_error(dir, {"model-00002-of-00002.safetensors is missing"});
  }
  {
    const std::string dir = copy_tiny_sdxl();
    fs::remove(fs::path(dir) / "tokenizer_2" / "vocab.json");
    fs::remove(fs::path(dir) / "tokenizer_2" / "merges.txt");
    expect_open_error(dir, {"tokenizer_2", "SDXL's second tokenizer"});
  }
}

TEST(ModelFilesSdxl, DimensionMismatchesAreRefused) {
  {
    const std::string dir = copy_tiny_sdxl();
    edit_json(fs::path(dir) / "text_encoder_2" / "config.json", [](json& j) { j["projection_dim"] = 40; });
    expect_open_error(dir, {"add_embedding takes 80 inputs", "projection_dim 40"});
  }
  {
    const std::string dir = copy_tiny_sdxl();
    edit_json(fs::path(dir) / "unet" / "config.json", [](json& j) { j["cross_attention_dim"] = 64; });
    expect_open_error(dir, {"cross_attention_dim 64", "64 + 64"});
  }
  {
    const std::string dir = copy_tiny_sdxl();
    edit_json(fs::path(dir) / "text_encoder_2" / "config.json",
              [](json& j) { j["architectures"] = json::array({"CLIPTextModel"}); });
    expect_open_error(dir, {"not a CLIPTextModelWithProjection"});
  }
  {
    const std::string dir = copy_tiny_sdxl();
    edit_json(fs::path(dir) / "unet" / "config.json", [](json& j) { j["addition_embed_type"] = nullptr; });
    expect_open_error(dir, {"no addition_embed_type \"text_time\""});
  }
}

TEST(ModelFilesSdxl, SdFolderWithTextTimeUnetIsRefused) {
  const std::string dir = copy_tiny_folder();
  edit_json(fs::path(dir) / "unet" / "config.json", [](json& j) {
    j["addition_embed_type"] = "text_time";
    j["addition_time_embed_dim"] = 8;
    j["projection_class_embeddings_input_dim"] = 80;
  });
  expect_open_error(dir, {"not an SDXL pipeline"});
}

TEST(ModelFilesErrors, CkptFileIsRefused) {
  const fs::path p = fs::path(testing::temp_dir()) / "model.ckpt";
  write_file(p, "\x80\x02}q\x00.");
  expect_open_error(p.string(), {"pickle", "Convert", ".safetensors"});
  // The same bytes under another name are recognized too.
  const fs::path q = fs::path(testing::temp_dir()) / "model.weights";
  write_file(q, "PK\x03\x04whatever");
  expect_open_error(q.string(), {"pickle"});
}

TEST(ModelFilesErrors, NonexistentPath) {
  expect_open_error(testing::temp_dir() + "/nothing-here.safetensors", {"no such file or folder"});
  expect_open_error("", {"no model path"});
}

TEST(ModelFilesErrors, SafetensorsWithoutStableDiffusionKeys) {
  const std::string path = testing::temp_dir() + "/other.safetensors";
  write_safetensors(path, {{"encoder.layer.0.weight", Tensor::zeros({2, 2})}});
  expect_open_error(path, {path, "no Stable Diffusion tensors"});
}

TEST(ModelFilesErrors, CorruptSingleFile) {
  const std::string path = testing::temp_dir() + "/bad.safetensors";
  std::string bytes(8, '\0');
  bytes[0] = 16;  // header length
  write_file(path, bytes + "{not json}      ");
  expect_open_error(path, {"not valid JSON"});
}

}  // namespace
}  // namespace sdcpu
