#include "formats/single_file_keys.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string_view>

#include "core/error.h"
#include "formats/single_file_openclip.h"

namespace sdcpu {
namespace {

using nlohmann::json;
using ShapeMap = std::map<std::string, Shape>;

constexpr std::string_view kUNetPrefix = "model.diffusion_model.";
constexpr std::string_view kVaePrefix = "first_stage_model.";
constexpr std::string_view kClipPrefix = "cond_stage_model.transformer.";
constexpr std::string_view kOpenClipPrefix = "cond_stage_model.model.";
constexpr std::string_view kSdxlPrefix = "conditioner.embedders.";
// SDXL base: diffusers' LDM_CLIP_PREFIX_TO_REMOVE and create_text_encoders_and_tokenizers_from_ldm's prefix.
constexpr std::string_view kSdxlClipPrefix = "conditioner.embedders.0.transformer.";
constexpr std::string_view kSdxlOpenClipPrefix = "conditioner.embedders.1.model.";
constexpr std::string_view kSdxlRefinerPrefix = "conditioner.embedders.0.model.";

[[noreturn]] void fail(const std::string& what) { throw ModelError("single-file checkpoint: " + what); }

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  size_t begin = 0;
  while (true) {
    const size_t dot = s.find('.', begin);
    out.push_back(s.substr(begin, dot == std::string::npos ? std::string::npos : dot - begin));
    if (dot == std::string::npos) return out;
    begin = dot + 1;
  }
}

// t[from] + "." + ... + t.back(); "" when from is past the end.
std::string join_from(const std::vector<std::string>& t, size_t from) {
  std::string out;
  for (size_t i = from; i < t.size(); ++i) {
    if (i > from) out += '.';
    out += t[i];
  }
  return out;
}

// A block index of a key: 1-4 decimal digits, else -1 (never throws, never overflows).
int parse_index(const std::string& s) {
  if (s.empty() || s.size() > 4) return -1;
  int v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return -1;
    v = v * 10 + (c - '0');
  }
  return v;
}

using Renames = std::initializer_list<std::pair<std::string_view, std::string_view>>;

// Replaces the first matching prefix of `rest`; nullopt when none matches (the key is then ignored).
std::optional<std::string> rename_prefix(const std::string& rest, Renames renames) {
  for (const auto& [from, to] : renames)
    if (rest.starts_with(from)) return std::string(to) + rest.substr(from.size());
  return std::nullopt;
}

// ---- UNet (convert_ldm_unet_checkpoint) --------------------------------------------------------------

// renew_resnet_paths: the LDM ResBlock's nn.Sequential indices -> diffusers ResnetBlock2D attributes.
std::optional<std::string> unet_resnet_part(const std::string& rest) {
  return rename_prefix(rest, {{"in_layers.0.", "norm1."},
                              {"in_layers.2.", "conv1."},
                              {"emb_layers.1.", "time_emb_proj."},
                              {"out_layers.0.", "norm2."},
                              {"out_layers.3.", "conv2."},
                              {"skip_connection.", "conv_shortcut."}});
}

std::optional<std::string> prefixed(const std::string& prefix, std::optional<std::string> part) {
  if (!part) return std::nullopt;
  return prefix + *part;
}

struct UNetBlocks {
  int levels = 0;
  int layers_per_block = 0;
  bool sdxl = false;  // label_emb.0.{0,2} are SDXL's add_embedding (DIFFUSERS_TO_LDM_MAPPING "addition_embed_type")
};

// The LDM UNet numbers its blocks flatly: input_blocks.0 is conv_in, then per level `layers_per_block`
// (resnet [+ attention]) blocks and, except on the last level, one downsampler block (`.0.op`);
// output_blocks has layers_per_block + 1 blocks per level. diffusers reads num_res_blocks from the
// yaml config; a single file has none, so both numbers are recovered from the key structure.
UNetBlocks unet_blocks(const std::vector<std::string>& suffixes) {
  int max_in = -1, max_out = -1;
  std::set<int> ops;
  for (const auto& s : suffixes) {
    const auto t = split(s);
    if (t.size() < 3) continue;
    const int i = parse_index(t[1]);
    if (t[0] == "input_blocks") {
      max_in = std::max(max_in, i);
      if (t[2] == "0" && t.size() > 3 && t[3] == "op") ops.insert(i);
    } else if (t[0] == "output_blocks") {
      max_out = std::max(max_out, i);
    }
  }
  if (max_in < 1 || max_out < 0) fail("the UNet (model.diffusion_model.*) has no input_blocks/output_blocks");
  UNetBlocks b;
  b.levels = static_cast<int>(ops.size()) + 1;
  const int n = max_in + 1;
  if (n % b.levels != 0 || n / b.levels < 2)
    fail("unexpected UNet layout: " + std::to_string(n) + " input_blocks for " + std::to_string(b.levels) + " levels");
  b.layers_per_block = n / b.levels - 1;
  std::set<int> expected_ops;
  for (int level = 1; level < b.levels; ++level) expected_ops.insert(level * (b.layers_per_block + 1));
  if (ops != expected_ops) fail("unexpected UNet layout: downsamplers are not at the end of each level");
  if (max_out + 1 != b.levels * (b.layers_per_block + 1))
    fail("unexpected UNet layout: " + std::to_string(max_out + 1) + " output_blocks, expected " +
         std::to_string(b.levels * (b.layers_per_block + 1)));
  return b;
}

std::optional<std::string> map_unet_key(const std::string& key, const UNetBlocks& blocks) {
  const auto t = split(key);
  if (t.size() < 3) return std::nullopt;
  const int per_level = blocks.layers_per_block + 1;
  if (t[0] == "label_emb" && blocks.sdxl && t[1] == "0") {
    if (t[2] == "0") return "add_embedding.linear_1." + join_from(t, 3);
    if (t[2] == "2") return "add_embedding.linear_2." + join_from(t, 3);
    return std::nullopt;
  }
  if (t[0] == "time_embed") {
    if (t[1] == "0") return "time_embedding.linear_1." + join_from(t, 2);
    if (t[1] == "2") return "time_embedding.linear_2." + join_from(t, 2);
    return std::nullopt;
  }
  if (t[0] == "out") {
    if (t[1] == "0") return "conv_norm_out." + join_from(t, 2);
    if (t[1] == "2") return "conv_out." + join_from(t, 2);
    return std::nullopt;
  }
  if (t[0] == "middle_block") {
    const std::string rest = join_from(t, 2);
    if (t[1] == "0") return prefixed("mid_block.resnets.0.", unet_resnet_part(rest));
    if (t[1] == "1") return "mid_block.attentions.0." + rest;
    if (t[1] == "2") return prefixed("mid_block.resnets.1.", unet_resnet_part(rest));
    return std::nullopt;
  }
  if (t.size() < 4) return std::nullopt;
  const int i = parse_index(t[1]), j = parse_index(t[2]);
  if (i < 0 || j < 0) return std::nullopt;
  const std::string rest = join_from(t, 3);
  if (t[0] == "input_blocks") {
    if (i == 0) return j == 0 ? std::optional<std::string>("conv_in." + rest) : std::nullopt;
    const int b = (i - 1) / per_level, l = (i - 1) % per_level;
    if (b >= blocks.levels) return std::nullopt;
    const std::string block = "down_blocks." + std::to_string(b) + ".";
    if (l < blocks.layers_per_block) {
      if (j == 0) return prefixed(block + "resnets." + std::to_string(l) + ".", unet_resnet_part(rest));
      // Transformer2DModel keeps the LDM SpatialTransformer's names (renew_attention_paths is a no-op).
      if (j == 1) return block + "attentions." + std::to_string(l) + "." + rest;
      return std::nullopt;
    }
    if (j == 0 && t[3] == "op" && t.size() > 4) return block + "downsamplers.0.conv." + join_from(t, 4);
    return std::nullopt;
  }
  if (t[0] == "output_blocks") {
    const int b = i / per_level, l = i % per_level;
    if (b >= blocks.levels) return std::nullopt;
    const std::string block = "up_blocks." + std::to_string(b) + ".";
    if (j == 0) return prefixed(block + "resnets." + std::to_string(l) + ".", unet_resnet_part(rest));
    // The upsampler follows the resnet (UpBlock2D: output_blocks.N.1.conv) or the attention
    // (CrossAttnUpBlock2D: output_blocks.N.2.conv) of each level's last layer.
    if ((j == 1 || j == 2) && t[3] == "conv") {
      if (l != blocks.layers_per_block) return std::nullopt;
      return block + "upsamplers.0.conv." + join_from(t, 4);
    }
    if (j == 1) return block + "attentions." + std::to_string(l) + "." + rest;
    return std::nullopt;
  }
  return std::nullopt;
}

// ---- VAE (convert_ldm_vae_checkpoint) ----------------------------------------------------------------

// renew_vae_resnet_paths
std::optional<std::string> vae_resnet_part(const std::string& rest) {
  return rename_prefix(rest, {{"norm1.", "norm1."},
                              {"conv1.", "conv1."},
                              {"norm2.", "norm2."},
                              {"conv2.", "conv2."},
                              {"nin_shortcut.", "conv_shortcut."}});
}

// renew_vae_attention_paths: the LDM AttnBlock's 1x1 convolutions -> diffusers Attention's linears.
std::optional<std::string> vae_attention_part(const std::string& rest) {
  return rename_prefix(
      rest, {{"norm.", "group_norm."}, {"q.", "to_q."}, {"k.", "to_k."}, {"v.", "to_v."}, {"proj_out.", "to_out.0."}});
}

// `decoder_levels`: the number of decoder.up.N levels. LDM numbers them from the lowest resolution up
// (decoder.up.0 runs last), diffusers in execution order, so the index is reversed.
std::optional<std::string> map_vae_key(const std::string& key, int decoder_levels) {
  const auto t = split(key);
  if (t.size() < 2) return std::nullopt;
  if (t[0] == "quant_conv" || t[0] == "post_quant_conv") return key;
  if (t[0] != "encoder" && t[0] != "decoder") return std::nullopt;  // e.g. loss.* of a training checkpoint
  const std::string& side = t[0];
  if (t.size() < 3) return std::nullopt;
  if (t[1] == "conv_in" || t[1] == "conv_out") return key;
  if (t[1] == "norm_out") return side + ".conv_norm_out." + join_from(t, 2);
  if (t.size() < 4) return std::nullopt;
  if (t[1] == "mid") {
    const std::string rest = join_from(t, 3);
    if (t[2] == "block_1") return prefixed(side + ".mid_block.resnets.0.", vae_resnet_part(rest));
    if (t[2] == "block_2") return prefixed(side + ".mid_block.resnets.1.", vae_resnet_part(rest));
    if (t[2] == "attn_1") return prefixed(side + ".mid_block.attentions.0.", vae_attention_part(rest));
    return std::nullopt;
  }
  if (t.size() < 6) return std::nullopt;
  int level = parse_index(t[2]);
  std::string block;
  if (side == "encoder" && t[1] == "down" && level >= 0) {
    block = "encoder.down_blocks." + std::to_string(level) + ".";
  } else if (side == "decoder" && t[1] == "up" && level >= 0 && level < decoder_levels) {
    block = "decoder.up_blocks." + std::to_string(decoder_levels - 1 - level) + ".";
  } else {
    return std::nullopt;
  }
  if (t[3] == "block") {
    const int j = parse_index(t[4]);
    if (j < 0) return std::nullopt;
    return prefixed(block + "resnets." + std::to_string(j) + ".", vae_resnet_part(join_from(t, 5)));
  }
  if ((t[3] == "downsample" && side == "encoder") || (t[3] == "upsample" && side == "decoder")) {
    if (t[4] != "conv") return std::nullopt;
    return block + (side == "encoder" ? "downsamplers" : "upsamplers") + ".0.conv." + join_from(t, 5);
  }
  return std::nullopt;
}

// ---- CLIP text encoder (convert_ldm_clip_checkpoint) -------------------------------------------------

// The file holds a transformers CLIPTextModel's state dict under cond_stage_model.transformer.; older
// transformers versions had no `text_model.` level in it.
std::optional<std::string> map_clip_key(const std::string& key) {
  if (key.ends_with("position_ids")) return std::nullopt;  // a buffer (arange), not a weight
  if (key.starts_with("text_model.")) return key;
  if (key.starts_with("embeddings.") || key.starts_with("encoder.") || key.starts_with("final_layer_norm."))
    return "text_model." + key;
  return std::nullopt;
}

// ---- configs (create_unet_diffusers_config, create_vae_diffusers_config) ------------------------------

const Shape& need(const ShapeMap& m, const std::string& name, size_t rank, const char* component) {
  auto it = m.find(name);
  if (it == m.end())
    fail(std::string("cannot derive the ") + component + " configuration: there is no tensor for '" + name + "'");
  if (it->second.size() != rank ||
      std::any_of(it->second.begin(), it->second.end(), [](int64_t d) { return d <= 0 || d > (1 << 24); }))
    fail(std::string(component) + " tensor '" + name + "' has an unexpected shape " + shape_to_string(it->second));
  return it->second;
}

int dim(const Shape& s, size_t i) { return static_cast<int>(s[i]); }

// Counts N = 0, 1, ... while `prefix + N + suffix` exists.
int count(const ShapeMap& m, const std::string& prefix, const std::string& suffix) {
  int n = 0;
  while (m.count(prefix + std::to_string(n) + suffix)) ++n;
  return n;
}

json derive_unet_config(const ShapeMap& m, const SingleFileHints& hints) {
  const char* what = "unet";
  const Shape& conv_in = need(m, "conv_in.weight", 4, what);
  const Shape& conv_out = need(m, "conv_out.weight", 4, what);
  const int levels = count(m, "down_blocks.", ".resnets.0.conv1.weight");
  if (levels == 0) need(m, "down_blocks.0.resnets.0.conv1.weight", 4, what);  // reports it missing
  const int layers = count(m, "down_blocks.0.resnets.", ".conv1.weight");
  std::vector<int> channels, heads, transformer_layers, channels_per_level;
  std::vector<std::string> down_types, up_types;
  int cross_attention_dim = 0;
  bool linear_projection = false;
  // The first attention block found fixes the cross-attention width and projection kind; SD uses the
  // same for every block.
  auto attention = [&](const std::string& prefix) {
    if (!m.count(prefix + "proj_in.weight")) return false;
    if (cross_attention_dim == 0) {
      cross_attention_dim = dim(need(m, prefix + "transformer_blocks.0.attn2.to_k.weight", 2, what), 1);
      // proj_in is a 1x1 convolution in SD 1.x and a linear layer in SD 2.x (use_linear_projection).
      linear_projection = m.at(prefix + "proj_in.weight").size() == 2;
    }
    return true;
  };
  for (int b = 0; b < levels; ++b) {
    const std::string block = "down_blocks." + std::to_string(b) + ".";
    const int c = dim(need(m, block + "resnets.0.conv1.weight", 4, what), 0);
    channels.push_back(c);
    const bool attn = attention(block + "attentions.0.");
    down_types.push_back(attn ? "CrossAttnDownBlock2D" : "DownBlock2D");
    transformer_layers.push_back(
        attn ? std::max(1, count(m, block + "attentions.0.transformer_blocks.", ".norm1.weight")) : 1);
    channels_per_level.push_back(c);
  }
  // create_unet_diffusers_config: the yaml's num_heads on every level when it has one (v1-inference.yaml: 8);
  // else, with linear projections, (model_channels // num_head_channels) * channel_mult per level
  // (v2-inference.yaml: num_head_channels 64, so SD 2.x's 5, 10, 20, 20); else UNet2DConditionModel's default 8.
  const int model_channels = dim(conv_in, 0);
  const int head_channels = hints.num_head_channels.value_or(64);
  for (int c : channels_per_level) {
    if (hints.num_heads || !linear_projection) {
      heads.push_back(hints.num_heads.value_or(8));
    } else {
      if (model_channels < head_channels || c % model_channels != 0)
        fail("unet: " + std::to_string(c) + " channels cannot be split into heads of " + std::to_string(head_channels) +
             " (num_head_channels" + (hints.num_head_channels ? "" : ", v2-inference.yaml's") + ") on " +
             std::to_string(model_channels) + " model channels; put the model's .yaml beside the file");
      heads.push_back(model_channels / head_channels * (c / model_channels));
    }
  }
  for (int b = 0; b < levels; ++b)
    up_types.push_back(attention("up_blocks." + std::to_string(b) + ".attentions.0.") ? "CrossAttnUpBlock2D"
                                                                                      : "UpBlock2D");
  const bool mid_attention = attention("mid_block.attentions.0.");
  if (cross_attention_dim == 0) fail("the UNet has no cross-attention blocks: not a Stable Diffusion UNet");
  json j;
  j["_class_name"] = "UNet2DConditionModel";
  j["in_channels"] = dim(conv_in, 1);
  j["out_channels"] = dim(conv_out, 0);
  j["conv_in_kernel"] = dim(conv_in, 2);
  j["conv_out_kernel"] = dim(conv_out, 2);
  j["block_out_channels"] = channels;
  j["down_block_types"] = down_types;
  j["up_block_types"] = up_types;
  j["mid_block_type"] = mid_attention ? "UNetMidBlock2DCrossAttn" : "UNetMidBlock2D";
  j["layers_per_block"] = layers;
  j["cross_attention_dim"] = cross_attention_dim;
  j["attention_head_dim"] = heads;  // diffusers' legacy name for the number of heads
  j["transformer_layers_per_block"] = transformer_layers;
  j["use_linear_projection"] = linear_projection;
  // Not visible in shapes; the values every SD 1.x/2.x config has (create_unet_diffusers_config).
  j["norm_num_groups"] = 32;
  j["norm_eps"] = 1e-5;
  j["flip_sin_to_cos"] = true;
  j["freq_shift"] = 0;
  j["downsample_padding"] = 1;
  j["sample_size"] = hints.image_size / 8;  // set in map_single_file from the VAE's levels
  // SDXL (create_unet_diffusers_config: num_classes "sequential" with a 2048-wide context): the text_time added
  // embedding, with addition_time_embed_dim 256 and the yaml's adm_in_channels as label_emb.0.0's input width.
  if (m.count("add_embedding.linear_1.weight")) {
    j["addition_embed_type"] = "text_time";
    j["addition_time_embed_dim"] = 256;
    j["projection_class_embeddings_input_dim"] = dim(need(m, "add_embedding.linear_1.weight", 2, what), 1);
  }
  return j;
}

json derive_vae_config(const ShapeMap& m, const SingleFileHints& hints) {
  const char* what = "vae";
  const int levels = count(m, "encoder.down_blocks.", ".resnets.0.conv1.weight");
  if (levels == 0) need(m, "encoder.down_blocks.0.resnets.0.conv1.weight", 4, what);
  std::vector<int> channels;
  for (int b = 0; b < levels; ++b)
    channels.push_back(
        dim(need(m, "encoder.down_blocks." + std::to_string(b) + ".resnets.0.conv1.weight", 4, what), 0));
  json j;
  j["_class_name"] = "AutoencoderKL";
  j["in_channels"] = dim(need(m, "encoder.conv_in.weight", 4, what), 1);
  j["out_channels"] = dim(need(m, "decoder.conv_out.weight", 4, what), 0);
  j["latent_channels"] = dim(need(m, "post_quant_conv.weight", 4, what), 0);
  j["block_out_channels"] = channels;
  j["layers_per_block"] = count(m, "encoder.down_blocks.0.resnets.", ".conv1.weight");
  j["norm_num_groups"] = 32;
  j["scaling_factor"] = hints.scale_factor.value_or(0.18215);  // the yaml's `scale_factor` (v1/v2: 0.18215)
  j["sample_size"] = hints.image_size;
  return j;
}

// `second`: SDXL's second encoder (laion/CLIP-ViT-bigG-14-laion2B-39B-b160k's config with projection_dim as in
// text_projection, which diffusers loads it as).
json derive_clip_config(const ShapeMap& m, SingleFileFamily family, bool second = false) {
  const char* what = "text_encoder";
  const Shape& tokens = need(m, "text_model.embeddings.token_embedding.weight", 2, what);
  const int hidden = dim(tokens, 1);
  // Both CLIP ViT-L/14 (SD 1.x) and OpenCLIP ViT-H/14 (SD 2.x) use 64-wide attention heads.
  if (hidden % 64 != 0) fail("text encoder width " + std::to_string(hidden) + " is not a multiple of 64");
  json j;
  j["architectures"] = {"CLIPTextModel"};
  j["model_type"] = "clip_text_model";
  j["vocab_size"] = dim(tokens, 0);
  j["hidden_size"] = hidden;
  j["intermediate_size"] = dim(need(m, "text_model.encoder.layers.0.mlp.fc1.weight", 2, what), 0);
  j["num_hidden_layers"] = count(m, "text_model.encoder.layers.", ".self_attn.q_proj.weight");
  j["num_attention_heads"] = hidden / 64;
  j["max_position_embeddings"] = dim(need(m, "text_model.embeddings.position_embedding.weight", 2, what), 0);
  // OpenAI CLIP uses QuickGELU; OpenCLIP ViT-H (SD 2.x) and ViT-bigG (SDXL's second) use exact GELU.
  const bool openai = family == SingleFileFamily::kSD1 || (family == SingleFileFamily::kSDXL && !second);
  j["hidden_act"] = openai ? "quick_gelu" : "gelu";
  j["layer_norm_eps"] = 1e-5;
  if (family == SingleFileFamily::kSDXL) {
    // openai/clip-vit-large-patch14's and the bigG config's token ids (transformers 4.30 pools at the argmax id).
    j["bos_token_id"] = 0;
    j["eos_token_id"] = 2;
    j["pad_token_id"] = 1;
    j["projection_dim"] = hidden;
    if (second) {
      j["architectures"] = {"CLIPTextModelWithProjection"};
      j["projection_dim"] = dim(need(m, "text_projection.weight", 2, what), 0);
    }
  } else if (family == SingleFileFamily::kSD1) {
    j["bos_token_id"] = 49406;
    j["eos_token_id"] = 49407;
    j["pad_token_id"] = 1;
    // CLIPTextModel has no projection; ViT-L/14's projection width equals its hidden size.
    j["projection_dim"] = hidden;
  } else {
    // The values of stabilityai/stable-diffusion-2's text_encoder/config.json, which diffusers loads for SD 2.x
    // (CLIPTextConfig's defaults; CLIPTextModel of transformers 4.30 reads none of them).
    j["bos_token_id"] = 0;
    j["eos_token_id"] = 2;
    j["pad_token_id"] = 1;
    j["projection_dim"] = 512;
  }
  return j;
}

// Runs a derived config through the same parser as config.json files, so a single file obeys exactly
// the rules (and defaults) a diffusers folder does.
template <typename Config>
Config parse_derived(const json& j, Config (*parse)(const std::string&), const char* component) {
  try {
    return parse(j.dump());
  } catch (const ModelError& e) {
    fail(std::string("derived ") + component + " configuration is not usable: " + e.what());
  }
}

void add_mapped(std::map<std::string, MappedTensor>& out, const MappedTensor& t) {
  auto [it, inserted] = out.try_emplace(t.name, t);
  if (!inserted) fail("tensors '" + it->second.source + "' and '" + t.source + "' are both '" + t.name + "'");
}

void add_mapped(std::map<std::string, MappedTensor>& out, std::string name, const NamedShape& t) {
  add_mapped(out, MappedTensor{std::move(name), t.name, t.shape});
}

std::vector<MappedTensor> values(const std::map<std::string, MappedTensor>& m) {
  std::vector<MappedTensor> out;
  out.reserve(m.size());
  for (const auto& [name, t] : m) out.push_back(t);
  return out;
}

ShapeMap shapes(const std::map<std::string, MappedTensor>& m) {
  ShapeMap out;
  for (const auto& [name, t] : m) out.emplace(name, t.shape);
  return out;
}

// The family, by the text encoder's keys (as diffusers' infer_diffusers_model_type tells them apart); kSD1 when
// none is recognized (map_single_file then explains what is missing).
SingleFileFamily single_file_family(const std::vector<NamedShape>& tensors) {
  bool openclip = false;
  for (const auto& t : tensors) {
    if (t.name.starts_with(kSdxlPrefix)) return SingleFileFamily::kSDXL;
    openclip = openclip || t.name.starts_with(kOpenClipPrefix);
  }
  return openclip ? SingleFileFamily::kSD2 : SingleFileFamily::kSD1;
}

}  // namespace

SingleFileLayout map_single_file(const std::vector<NamedShape>& tensors, const SingleFileHints& hints) {
  SingleFileLayout layout;
  // Family detection, as diffusers' infer_diffusers_model_type does it: by the text encoder's keys.
  layout.family = single_file_family(tensors);
  const bool sdxl = layout.family == SingleFileFamily::kSDXL;
  const std::string_view clip_prefix = sdxl ? kSdxlClipPrefix : kClipPrefix;
  const std::string_view openclip_prefix = sdxl ? kSdxlOpenClipPrefix : kOpenClipPrefix;
  std::vector<std::string> unet_keys;
  bool any_vae = false, any_clip = false, refiner = false;
  std::vector<NamedShape> openclip;  // the OpenCLIP encoder's tensors without the prefix
  for (const auto& t : tensors) {
    if (t.name.starts_with(kUNetPrefix)) unet_keys.push_back(t.name.substr(kUNetPrefix.size()));
    any_vae = any_vae || t.name.starts_with(kVaePrefix);
    any_clip = any_clip || t.name.starts_with(clip_prefix);
    refiner = refiner || t.name.starts_with(kSdxlRefinerPrefix);
    if (t.name.starts_with(openclip_prefix)) openclip.push_back({t.name.substr(openclip_prefix.size()), t.shape});
  }
  if (sdxl && refiner)
    fail("this is an SDXL refiner checkpoint (conditioner.embedders.0.model.*: one OpenCLIP encoder); sdcpu loads "
         "SDXL base checkpoints only");
  if (sdxl && !any_clip)
    fail("SDXL checkpoint without its first text encoder (conditioner.embedders.0.transformer.*, CLIP ViT-L)");
  if (sdxl && openclip.empty())
    fail("SDXL checkpoint without its second text encoder (conditioner.embedders.1.model.*, OpenCLIP ViT-bigG)");
  const bool sd2 = layout.family == SingleFileFamily::kSD2;
  if (sd2 && any_clip)
    fail(
        "both an OpenAI CLIP (cond_stage_model.transformer.*) and an OpenCLIP (cond_stage_model.model.*) text "
        "encoder");
  if (unet_keys.empty() && !any_vae && !any_clip && openclip.empty()) {
    // A common mistake: pointing at one component file of a diffusers folder.
    const bool component = std::any_of(tensors.begin(), tensors.end(), [](const NamedShape& t) {
      return t.name.starts_with("down_blocks.") || t.name.starts_with("encoder.down_blocks.") ||
             t.name.starts_with("text_model.");
    });
    fail(
        "no Stable Diffusion tensors found (expected model.diffusion_model.*, first_stage_model.* and "
        "cond_stage_model.transformer.*; the file has " +
        std::to_string(tensors.size()) + " tensors" + (tensors.empty() ? "" : ", e.g. '" + tensors[0].name + "'") +
        ")" + (component ? ". It looks like one component of a diffusers folder: open the folder instead" : ""));
  }
  if (unet_keys.empty()) fail("no UNet tensors (model.diffusion_model.*)");
  if (!any_vae) fail("no VAE tensors (first_stage_model.*)");
  if (!any_clip && !sd2 && !sdxl) fail("no text encoder tensors (cond_stage_model.transformer.*)");
  const std::optional<OpenClipShape> clip_shape =
      sd2 || sdxl ? std::optional<OpenClipShape>(open_clip_shape(openclip, std::string(openclip_prefix), sdxl))
                  : std::nullopt;

  UNetBlocks blocks = unet_blocks(unet_keys);
  blocks.sdxl = sdxl;
  int decoder_levels = 0;
  for (const auto& t : tensors)
    if (t.name.starts_with("first_stage_model.decoder.up.")) {
      const auto parts = split(t.name);
      if (parts.size() > 3) decoder_levels = std::max(decoder_levels, parse_index(parts[3]) + 1);
    }

  std::map<std::string, MappedTensor> unet, vae, clip, clip_2;
  // SD 2.x's only text encoder is OpenCLIP; SDXL's OpenCLIP encoder is its second.
  std::map<std::string, MappedTensor>& openclip_out = sdxl ? clip_2 : clip;
  for (const auto& t : tensors) {
    std::optional<std::string> name;
    std::map<std::string, MappedTensor>* component = nullptr;
    if (t.name.starts_with(kUNetPrefix)) {
      name = map_unet_key(t.name.substr(kUNetPrefix.size()), blocks);
      component = &unet;
    } else if (t.name.starts_with(kVaePrefix)) {
      name = map_vae_key(t.name.substr(kVaePrefix.size()), decoder_levels);
      component = &vae;
    } else if (t.name.starts_with(clip_prefix)) {
      name = map_clip_key(t.name.substr(clip_prefix.size()));
      component = &clip;
    } else if (clip_shape && t.name.starts_with(openclip_prefix)) {
      const NamedShape rest{t.name.substr(openclip_prefix.size()), t.shape};
      const std::vector<MappedTensor> mapped = map_open_clip_key(rest, t.name, *clip_shape);
      for (const MappedTensor& m : mapped) add_mapped(openclip_out, m);
      if (mapped.empty()) layout.ignored.push_back(t.name);
      continue;
    }
    if (name)
      add_mapped(*component, std::move(*name), t);
    else
      layout.ignored.push_back(t.name);
  }

  json unet_json = derive_unet_config(shapes(unet), hints);
  const json vae_json = derive_vae_config(shapes(vae), hints);
  // create_unet_diffusers_config: image_size // vae_scale_factor, 2 ** (VAE levels - 1).
  const size_t vae_levels = vae_json["block_out_channels"].size();
  if (vae_levels >= 1 && vae_levels <= 8) unet_json["sample_size"] = hints.image_size >> (vae_levels - 1);
  const json clip_json = derive_clip_config(shapes(clip), layout.family);
  layout.unet_config = parse_derived(unet_json, parse_unet_config, "unet");
  layout.vae_config = parse_derived(vae_json, parse_vae_config, "vae");
  layout.text_encoder_config = parse_derived(clip_json, parse_clip_text_config, "text_encoder");
  int context_width = layout.text_encoder_config.hidden_size;
  if (sdxl) {
    const json clip_2_json = derive_clip_config(shapes(clip_2), layout.family, /*second=*/true);
    layout.text_encoder_2_config = parse_derived(clip_2_json, parse_clip_text_config, "text_encoder_2");
    layout.text_encoder_2_config_json = clip_2_json.dump(2);
    layout.text_encoder_2 = values(clip_2);
    // StableDiffusionXLPipeline concatenates both encoders' states (768 + 1280 = 2048 for SDXL base).
    context_width += layout.text_encoder_2_config.hidden_size;
    if (!layout.unet_config.has_text_time())
      fail("SDXL checkpoint whose UNet has no added embedding (model.diffusion_model.label_emb.0.*)");
    // add_embedding's input: the pooled, projected text embeds and 6 time ids of addition_time_embed_dim each.
    const int added = layout.text_encoder_2_config.projection_dim + 6 * layout.unet_config.addition_time_embed_dim;
    if (layout.unet_config.projection_class_embeddings_input_dim != added)
      fail("the UNet's added embedding takes " +
           std::to_string(layout.unet_config.projection_class_embeddings_input_dim) + " inputs, but the text "
           "projection (" + std::to_string(layout.text_encoder_2_config.projection_dim) + ") and 6 time ids of 256 give " +
           std::to_string(added));
  }
  if (layout.unet_config.cross_attention_dim != context_width)
    fail("the UNet's cross-attention width " + std::to_string(layout.unet_config.cross_attention_dim) +
         " does not match the text encoder" + (sdxl ? "s' widths together " : "'s width ") +
         std::to_string(context_width));
  layout.architecture = sdxl  ? "SDXL"
                        : sd2 ? "SD 2.x"
                        : layout.unet_config.in_channels == 9 ? "SD 1.x inpainting"
                                                              : "SD 1.x";
  layout.unet_config_json = unet_json.dump(2);
  layout.vae_config_json = vae_json.dump(2);
  layout.text_encoder_config_json = clip_json.dump(2);
  layout.unet = values(unet);
  layout.vae = values(vae);
  layout.text_encoder = values(clip);
  return layout;
}

}  // namespace sdcpu
