#include "formats/diffusers_folder.h"

#include <cctype>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <vector>

#include "core/error.h"
#include "formats/safetensors.h"

namespace sdcpu {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// Config and index files are a few KiB (a sharded index a few hundred); this bounds what a hostile
// folder can make us allocate.
constexpr uintmax_t kMaxJsonBytes = 64u << 20;

std::string read_text(const fs::path& file, const std::string& what) {
  std::error_code ec;
  if (!fs::is_regular_file(file, ec)) throw ModelError(file.string() + " is missing (" + what + ")");
  const uintmax_t size = fs::file_size(file, ec);
  if (ec) throw IoError("cannot read " + file.string() + ": " + ec.message());
  if (size > kMaxJsonBytes) throw ModelError(file.string() + " is " + std::to_string(size) + " bytes, too large");
  std::ifstream in(file, std::ios::binary);
  std::string text(static_cast<size_t>(size), '\0');
  if (!in || !in.read(text.data(), static_cast<std::streamsize>(size))) throw IoError("cannot read " + file.string());
  return text;
}

json parse_json_object(const std::string& text, const fs::path& file) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    throw ModelError(file.string() + " is not valid JSON: " + e.what());
  }
  if (!j.is_object()) throw ModelError(file.string() + " is not a JSON object");
  return j;
}

json read_json_object(const fs::path& file, const std::string& what) {
  return parse_json_object(read_text(file, what), file);
}

// model_index.json maps each component to [library, class]. sdcpu runs the StableDiffusionPipeline family (a
// UNet2DConditionModel, an AutoencoderKL and one CLIPTextModel) and StableDiffusionXLPipeline (a second text
// encoder, CLIPTextModelWithProjection, with its tokenizer_2); DiffusionPipeline.from_pretrained reads the same
// entries to know what to load. Returns whether the folder is an SDXL pipeline.
bool check_model_index(const json& index, const fs::path& file) {
  auto cls = index.find("_class_name");
  if (cls == index.end() || !cls->is_string())
    throw ModelError(file.string() + " has no \"_class_name\": not a diffusers pipeline index");
  const std::string pipeline = cls->get<std::string>();
  const bool sdxl = pipeline.find("XL") != std::string::npos || index.contains("text_encoder_2");
  if (sdxl && pipeline != "StableDiffusionXLPipeline")
    throw ModelError(file.string() + ": " + pipeline +
                     " is not supported (of the SDXL pipelines, sdcpu runs "
                     "StableDiffusionXLPipeline)");
  struct Expected {
    const char* component;
    const char* class_name;
  };
  std::vector<Expected> expected = {{"unet", "UNet2DConditionModel"},
                                    {"vae", "AutoencoderKL"},
                                    {"text_encoder", "CLIPTextModel"},
                                    {"scheduler", nullptr}};
  if (sdxl) expected.push_back({"text_encoder_2", "CLIPTextModelWithProjection"});
  for (const Expected& e : expected) {
    auto it = index.find(e.component);
    if (it == index.end() || !it->is_array() || it->size() != 2 || !(*it)[1].is_string())
      throw ModelError(file.string() + ": " + pipeline + " has no " + e.component + " component: not a " +
                       (sdxl ? "Stable Diffusion XL (SDXL)" : "Stable Diffusion") + " pipeline");
    const std::string got = (*it)[1].get<std::string>();
    if (e.class_name && got != e.class_name)
      throw ModelError(file.string() + ": the " + e.component + " is a " + got + "; sdcpu loads a " + e.class_name);
  }
  return sdxl;
}

template <typename Config>
Config parse_config_file(const fs::path& file, Config (*parse)(const std::string&), const std::string& what) {
  const std::string text = read_text(file, what);
  try {
    return parse(text);
  } catch (const ModelError& e) {
    throw ModelError(file.string() + ": " + e.what());
  }
}

// A weight file named inside a sharded index must be a plain file name in the component folder.
bool plain_file_name(const std::string& name) {
  return !name.empty() && name.find('/') == std::string::npos && name.find('\\') == std::string::npos && name != "." &&
         name != "..";
}

// `<base>.safetensors.index[.<variant>].json` (diffusers' and transformers' _add_variant put the variant
// before the last extension): {"metadata": ..., "weight_map": {tensor: shard file}}.
void add_sharded(WeightStore& store, const fs::path& index_file, std::vector<std::string>& weight_files) {
  const json index = read_json_object(index_file, "sharded weight index");
  auto map = index.find("weight_map");
  if (map == index.end() || !map->is_object() || map->empty())
    throw ModelError(index_file.string() + " has no \"weight_map\" object");
  std::map<std::string, std::shared_ptr<const SafetensorsFile>> shards;
  for (auto it = map->begin(); it != map->end(); ++it) {
    if (!it.value().is_string() || !plain_file_name(it.value().get<std::string>()))
      throw ModelError(index_file.string() + ": tensor '" + it.key() + "' names an invalid shard file");
    const std::string shard = it.value().get<std::string>();
    auto& file = shards[shard];
    if (!file) {
      const fs::path p = index_file.parent_path() / shard;
      std::error_code ec;
      if (!fs::is_regular_file(p, ec)) throw ModelError(index_file.string() + ": shard " + p.string() + " is missing");
      file = std::make_shared<const SafetensorsFile>(p.string());
      store.add_all(file);
      weight_files.push_back(p.string());
    }
    if (!file->find(it.key()))
      throw ModelError(index_file.string() + ": tensor '" + it.key() + "' is not in " + file->path());
  }
}

// Chooses and opens the weights of one component folder.
std::shared_ptr<WeightStore> load_weights(const fs::path& dir, const std::string& component, const std::string& base,
                                          const std::string& variant, std::vector<std::string>& weight_files) {
  auto single = [&](const std::string& v) { return base + (v.empty() ? "" : "." + v) + ".safetensors"; };
  auto sharded = [&](const std::string& v) {
    return base + ".safetensors.index" + (v.empty() ? "" : "." + v) + ".json";
  };
  // diffusers' preference: the requested variant, else (with a deprecation warning in diffusers) the
  // plain weights; with no variant asked, the plain weights and then the fp16 ones, which many hub
  // repositories ship alone.
  const std::string fallback = variant.empty() ? "fp16" : "";
  const std::string candidates[] = {single(variant), sharded(variant), single(fallback), sharded(fallback)};
  auto store = std::make_shared<WeightStore>(component);
  std::error_code ec;
  for (const std::string& name : candidates) {
    const fs::path p = dir / name;
    if (!fs::is_regular_file(p, ec)) continue;
    if (name.ends_with(".json")) {
      add_sharded(*store, p, weight_files);
    } else {
      store->add_all(std::make_shared<const SafetensorsFile>(p.string()));
      weight_files.push_back(p.string());
    }
    return store;
  }
  for (const std::string& name :
       {base + ".bin", base + "." + (variant.empty() ? "fp16" : variant) + ".bin", base + ".bin.index.json"})
    if (fs::exists(dir / name, ec))
      throw ModelError((dir / name).string() +
                       ": PyTorch pickle weights; sdcpu loads .safetensors only (pickle files can run code when "
                       "loaded). Convert the model to safetensors, e.g. save_pretrained(safe_serialization=True)");
  throw ModelError(dir.string() + ": no " + component + " weights: expected " + (dir / single(variant)).string() +
                   (variant.empty() ? "" : " or " + (dir / single("")).string()));
}

// The architecture, from what the UNet is conditioned on: SDXL on two encoders' states and added time ids, SD 2.x
// on OpenCLIP ViT-H (1024 wide) through linear projections, SD 1.x on CLIP ViT-L (768 wide) through 1x1
// convolutions.
std::string detect_architecture(const UNetConfig& unet, bool sdxl) {
  if (sdxl) return "SDXL";
  std::string arch = (unet.use_linear_projection || unet.cross_attention_dim == 1024) ? "SD 2.x" : "SD 1.x";
  if (unet.in_channels == 9) arch += " inpainting";
  return arch;
}

// A tokenizer folder: vocab.json and merges.txt, or neither (then the bundled CLIP vocabulary); "" when neither.
std::string tokenizer_folder(const fs::path& dir) {
  std::error_code ec;
  const bool vocab = fs::is_regular_file(dir / "vocab.json", ec);
  const bool merges = fs::is_regular_file(dir / "merges.txt", ec);
  if (vocab != merges)
    throw ModelError(dir.string() + ": has " +
                     (vocab ? "vocab.json but no merges.txt" : "merges.txt but no vocab.json"));
  return vocab ? dir.string() : "";
}

// StableDiffusionXLPipeline: encoder_hidden_states are the two encoders' states concatenated on channels, and the
// add_embedding takes the second's text_embeds and 6 time ids (_get_add_time_ids checks the same sum).
void check_sdxl_dims(const ModelFiles& m, const std::string& path) {
  const ClipTextConfig &one = m.text_encoder_config, &two = m.text_encoder_2_config;
  const UNetConfig& unet = m.unet_config;
  if (!two.with_projection)
    throw ModelError(path + ": text_encoder_2/config.json is not a CLIPTextModelWithProjection (\"architectures\")");
  if (!unet.has_text_time())
    throw ModelError(path + ": an SDXL pipeline whose unet has no addition_embed_type \"text_time\"");
  if (unet.cross_attention_dim != one.hidden_size + two.hidden_size)
    throw ModelError(path + ": the unet's cross_attention_dim " + std::to_string(unet.cross_attention_dim) +
                     " is not the text encoders' hidden sizes " + std::to_string(one.hidden_size) + " + " +
                     std::to_string(two.hidden_size));
  const int add_in = two.projection_dim + 6 * unet.addition_time_embed_dim;
  if (unet.projection_class_embeddings_input_dim != add_in)
    throw ModelError(path + ": the unet's add_embedding takes " +
                     std::to_string(unet.projection_class_embeddings_input_dim) +
                     " inputs, but text_encoder_2's projection_dim " + std::to_string(two.projection_dim) + " + 6 * " +
                     std::to_string(unet.addition_time_embed_dim) + " time id features = " + std::to_string(add_in));
  if (one.max_position_embeddings != two.max_position_embeddings)
    throw ModelError(path + ": the two text encoders take prompts of different lengths");
}

}  // namespace

ModelFiles open_diffusers_folder(const std::string& path, const std::string& variant) {
  for (char c : variant)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-')
      throw InvalidArgument("invalid weight variant '" + variant + "'");
  const fs::path root(path);
  std::error_code ec;
  const fs::path index_file = root / "model_index.json";
  if (!fs::is_regular_file(index_file, ec))
    throw ModelError(path + " is not a diffusers pipeline folder: model_index.json is missing");
  const json index = read_json_object(index_file, "pipeline index");
  const bool sdxl = check_model_index(index, index_file);

  ModelFiles m;
  m.path = path;
  m.layout = "diffusers folder";
  m.pipeline_class = index.at("_class_name").get<std::string>();  // checked above
  m.unet_config = parse_config_file(root / "unet" / "config.json", parse_unet_config, "unet config");
  m.vae_config = parse_config_file(root / "vae" / "config.json", parse_vae_config, "vae config");
  m.text_encoder_config =
      parse_config_file(root / "text_encoder" / "config.json", parse_clip_text_config, "text_encoder config");
  if (sdxl) {
    m.text_encoder_2_config =
        parse_config_file(root / "text_encoder_2" / "config.json", parse_clip_text_config, "text_encoder_2 config");
    check_sdxl_dims(m, path);
    // register_to_config(force_zeros_for_empty_prompt=...) lands in model_index.json; __init__'s default is true.
    m.force_zeros_for_empty_prompt = true;
    auto zeros = index.find("force_zeros_for_empty_prompt");
    if (zeros != index.end() && !zeros->is_null()) {
      if (!zeros->is_boolean())
        throw ModelError(index_file.string() + ": force_zeros_for_empty_prompt is not a boolean");
      m.force_zeros_for_empty_prompt = zeros->get<bool>();
    }
  } else if (m.unet_config.cross_attention_dim != m.text_encoder_config.hidden_size) {
    throw ModelError(path + ": the unet's cross_attention_dim " + std::to_string(m.unet_config.cross_attention_dim) +
                     " does not match the text_encoder's hidden_size " +
                     std::to_string(m.text_encoder_config.hidden_size));
  } else if (m.unet_config.has_text_time()) {
    throw ModelError(path + ": the unet takes SDXL's added time ids (addition_embed_type \"text_time\"), but " +
                     index_file.string() + " is not an SDXL pipeline");
  }
  m.architecture = detect_architecture(m.unet_config, sdxl);

  const fs::path scheduler = root / "scheduler" / "scheduler_config.json";
  m.scheduler_config_json = read_text(scheduler, "scheduler config");
  m.scheduler_config_path = scheduler.string();
  parse_json_object(m.scheduler_config_json, scheduler);  // the scheduler layer reads the keys

  m.tokenizer_dir = tokenizer_folder(root / "tokenizer");  // none: the bundled CLIP vocabulary
  // SDXL's tokenizer_2 differs in its pad token ("!"), which only its own folder says.
  if (sdxl) {
    m.tokenizer_2_dir = tokenizer_folder(root / "tokenizer_2");
    if (m.tokenizer_2_dir.empty())
      throw ModelError(path + ": tokenizer_2/ has no vocab.json and merges.txt (SDXL's second tokenizer)");
  }

  m.unet = load_weights(root / "unet", "unet", "diffusion_pytorch_model", variant, m.weight_files);
  m.vae = load_weights(root / "vae", "vae", "diffusion_pytorch_model", variant, m.weight_files);
  m.text_encoder = load_weights(root / "text_encoder", "text_encoder", "model", variant, m.weight_files);
  if (sdxl)
    m.text_encoder_2 = load_weights(root / "text_encoder_2", "text_encoder_2", "model", variant, m.weight_files);
  return m;
}

}  // namespace sdcpu
