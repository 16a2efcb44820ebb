#include "formats/model_config.h"

#include <nlohmann/json.hpp>
#include <tuple>

#include "core/error.h"

namespace sdcpu {
namespace {

using nlohmann::json;

json parse_object(const std::string& text, const char* what) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    throw ModelError(std::string(what) + " config.json is not valid JSON: " + e.what());
  }
  if (!j.is_object()) throw ModelError(std::string(what) + " config.json is not a JSON object");
  return j;
}

// Reads j[key] into `out` if present and not null; a wrong type is a ModelError naming the key.
template <typename T>
void get_opt(const json& j, const char* key, T& out, const char* what) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return;
  try {
    out = it->get<T>();
  } catch (const json::exception&) {
    throw ModelError(std::string(what) + " config.json: '" + key + "' has the wrong type");
  }
}

// diffusers accepts an int (same for every block) or a list (one per block) for several keys.
std::vector<int> int_or_list(const json& j, const char* key, size_t blocks, std::vector<int> fallback,
                             const char* what) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (it->is_number_integer()) return std::vector<int>(blocks, it->get<int>());
  std::vector<int> v;
  get_opt(j, key, v, what);
  if (v.size() != blocks)
    throw ModelError(std::string(what) + " config.json: '" + key + "' has " + std::to_string(v.size()) +
                     " entries for " + std::to_string(blocks) + " blocks");
  return v;
}

void require_positive(int v, const char* key, const char* what) {
  if (v <= 0 || v > (1 << 20))
    throw ModelError(std::string(what) + " config.json: '" + key + "' = " + std::to_string(v) + " is not valid");
}

}  // namespace

ClipTextConfig parse_clip_text_config(const std::string& text) {
  const char* what = "text_encoder";
  json j = parse_object(text, what);
  ClipTextConfig c;
  get_opt(j, "vocab_size", c.vocab_size, what);
  get_opt(j, "hidden_size", c.hidden_size, what);
  get_opt(j, "intermediate_size", c.intermediate_size, what);
  get_opt(j, "num_hidden_layers", c.num_hidden_layers, what);
  get_opt(j, "num_attention_heads", c.num_attention_heads, what);
  get_opt(j, "max_position_embeddings", c.max_position_embeddings, what);
  get_opt(j, "hidden_act", c.hidden_act, what);
  get_opt(j, "layer_norm_eps", c.layer_norm_eps, what);
  get_opt(j, "bos_token_id", c.bos_token_id, what);
  get_opt(j, "eos_token_id", c.eos_token_id, what);
  get_opt(j, "pad_token_id", c.pad_token_id, what);
  get_opt(j, "projection_dim", c.projection_dim, what);
  std::vector<std::string> architectures;
  get_opt(j, "architectures", architectures, what);
  // Other names (CLIPTextModel, or none) load the text transformer alone, as transformers' CLIPTextModel does.
  for (const auto& a : architectures)
    if (a == "CLIPTextModelWithProjection") c.with_projection = true;
  if (c.with_projection) require_positive(c.projection_dim, "projection_dim", what);
  require_positive(c.vocab_size, "vocab_size", what);
  require_positive(c.hidden_size, "hidden_size", what);
  require_positive(c.intermediate_size, "intermediate_size", what);
  require_positive(c.num_hidden_layers, "num_hidden_layers", what);
  require_positive(c.num_attention_heads, "num_attention_heads", what);
  require_positive(c.max_position_embeddings, "max_position_embeddings", what);
  if (c.hidden_size % c.num_attention_heads != 0)
    throw ModelError("text_encoder config.json: hidden_size is not a multiple of num_attention_heads");
  if (c.hidden_act != "quick_gelu" && c.hidden_act != "gelu")
    throw ModelError("text_encoder config.json: unsupported hidden_act '" + c.hidden_act + "'");
  return c;
}

UNetConfig parse_unet_config(const std::string& text) {
  const char* what = "unet";
  json j = parse_object(text, what);
  UNetConfig c;
  get_opt(j, "in_channels", c.in_channels, what);
  get_opt(j, "out_channels", c.out_channels, what);
  get_opt(j, "block_out_channels", c.block_out_channels, what);
  const size_t blocks = c.block_out_channels.size();
  c.down_block_types.assign(blocks, "CrossAttnDownBlock2D");
  c.down_block_types.back() = "DownBlock2D";
  c.up_block_types.assign(blocks, "CrossAttnUpBlock2D");
  c.up_block_types.front() = "UpBlock2D";
  get_opt(j, "down_block_types", c.down_block_types, what);
  get_opt(j, "up_block_types", c.up_block_types, what);
  get_opt(j, "mid_block_type", c.mid_block_type, what);
  get_opt(j, "layers_per_block", c.layers_per_block, what);
  get_opt(j, "cross_attention_dim", c.cross_attention_dim, what);
  get_opt(j, "norm_num_groups", c.norm_num_groups, what);
  get_opt(j, "norm_eps", c.norm_eps, what);
  get_opt(j, "use_linear_projection", c.use_linear_projection, what);
  get_opt(j, "flip_sin_to_cos", c.flip_sin_to_cos, what);
  get_opt(j, "freq_shift", c.freq_shift, what);
  get_opt(j, "conv_in_kernel", c.conv_in_kernel, what);
  get_opt(j, "conv_out_kernel", c.conv_out_kernel, what);
  get_opt(j, "downsample_padding", c.downsample_padding, what);
  get_opt(j, "sample_size", c.sample_size, what);
  get_opt(j, "addition_embed_type", c.addition_embed_type, what);
  get_opt(j, "addition_time_embed_dim", c.addition_time_embed_dim, what);
  get_opt(j, "projection_class_embeddings_input_dim", c.projection_class_embeddings_input_dim, what);
  if (!c.addition_embed_type.empty() && !c.has_text_time())
    throw ModelError("unet config.json: unsupported addition_embed_type '" + c.addition_embed_type +
                     "' (only \"text_time\", SDXL's)");
  if (c.has_text_time()) {
    require_positive(c.addition_time_embed_dim, "addition_time_embed_dim", what);
    require_positive(c.projection_class_embeddings_input_dim, "projection_class_embeddings_input_dim", what);
  }
  get_opt(j, "time_cond_proj_dim", c.time_cond_proj_dim, what);
  if (c.time_cond_proj_dim != 0) require_positive(c.time_cond_proj_dim, "time_cond_proj_dim", what);
  if (blocks == 0 || blocks > 8) throw ModelError("unet config.json: block_out_channels must have 1..8 entries");
  for (int ch : c.block_out_channels) require_positive(ch, "block_out_channels", what);
  if (c.down_block_types.size() != blocks || c.up_block_types.size() != blocks)
    throw ModelError("unet config.json: down/up_block_types must have one entry per block_out_channels");
  for (const auto& t : c.down_block_types)
    if (t != "CrossAttnDownBlock2D" && t != "DownBlock2D")
      throw ModelError("unet config.json: unsupported down block type '" + t + "'");
  for (const auto& t : c.up_block_types)
    if (t != "CrossAttnUpBlock2D" && t != "UpBlock2D")
      throw ModelError("unet config.json: unsupported up block type '" + t + "'");
  if (c.mid_block_type != "UNetMidBlock2DCrossAttn")
    throw ModelError("unet config.json: unsupported mid_block_type '" + c.mid_block_type + "'");
  // diffusers: num_attention_heads = num_attention_heads or attention_head_dim (a historical misnomer).
  std::vector<int> heads = int_or_list(j, "attention_head_dim", blocks, std::vector<int>(blocks, 8), what);
  heads = int_or_list(j, "num_attention_heads", blocks, heads, what);
  c.num_attention_heads = heads;
  c.transformer_layers_per_block =
      int_or_list(j, "transformer_layers_per_block", blocks, std::vector<int>(blocks, 1), what);
  require_positive(c.in_channels, "in_channels", what);
  require_positive(c.out_channels, "out_channels", what);
  require_positive(c.layers_per_block, "layers_per_block", what);
  require_positive(c.cross_attention_dim, "cross_attention_dim", what);
  require_positive(c.norm_num_groups, "norm_num_groups", what);
  for (size_t b = 0; b < blocks; ++b) {
    require_positive(heads[b], "num_attention_heads", what);
    if (c.block_out_channels[b] % heads[b] != 0)
      throw ModelError("unet config.json: block_out_channels not divisible by the number of heads");
    if (c.block_out_channels[b] % c.norm_num_groups != 0)
      throw ModelError("unet config.json: block_out_channels not divisible by norm_num_groups");
  }
  if (c.conv_in_kernel % 2 == 0 || c.conv_out_kernel % 2 == 0)
    throw ModelError("unet config.json: conv_in_kernel/conv_out_kernel must be odd");
  return c;
}

VaeConfig parse_vae_config(const std::string& text) {
  const char* what = "vae";
  json j = parse_object(text, what);
  VaeConfig c;
  get_opt(j, "in_channels", c.in_channels, what);
  get_opt(j, "out_channels", c.out_channels, what);
  get_opt(j, "latent_channels", c.latent_channels, what);
  get_opt(j, "block_out_channels", c.block_out_channels, what);
  get_opt(j, "layers_per_block", c.layers_per_block, what);
  get_opt(j, "norm_num_groups", c.norm_num_groups, what);
  get_opt(j, "scaling_factor", c.scaling_factor, what);
  get_opt(j, "shift_factor", c.shift_factor, what);
  get_opt(j, "sample_size", c.sample_size, what);
  if (c.block_out_channels.empty() || c.block_out_channels.size() > 8)
    throw ModelError("vae config.json: block_out_channels must have 1..8 entries");
  for (int ch : c.block_out_channels) {
    require_positive(ch, "block_out_channels", what);
    if (ch % c.norm_num_groups != 0)
      throw ModelError("vae config.json: block_out_channels not divisible by norm_num_groups");
  }
  require_positive(c.in_channels, "in_channels", what);
  require_positive(c.out_channels, "out_channels", what);
  require_positive(c.latent_channels, "latent_channels", what);
  require_positive(c.layers_per_block, "layers_per_block", what);
  require_positive(c.norm_num_groups, "norm_num_groups", what);
  if (!(c.scaling_factor > 0)) throw ModelError("vae config.json: scaling_factor must be positive");
  return c;
}

TaesdConfig parse_taesd_config(const std::string& text) {
  const char* what = "TAESD";
  json j = parse_object(text, what);
  std::string class_name = "AutoencoderTiny";
  get_opt(j, "_class_name", class_name, what);
  if (class_name != "AutoencoderTiny")
    throw ModelError("TAESD config.json: _class_name is '" + class_name +
                     "', not AutoencoderTiny (a TAESD such as madebyollin/taesd)");
  TaesdConfig c;
  get_opt(j, "in_channels", c.in_channels, what);
  get_opt(j, "out_channels", c.out_channels, what);
  get_opt(j, "latent_channels", c.latent_channels, what);
  get_opt(j, "encoder_block_out_channels", c.encoder_block_out_channels, what);
  get_opt(j, "decoder_block_out_channels", c.decoder_block_out_channels, what);
  get_opt(j, "num_encoder_blocks", c.num_encoder_blocks, what);
  get_opt(j, "num_decoder_blocks", c.num_decoder_blocks, what);
  get_opt(j, "upsampling_scaling_factor", c.upsampling_scaling_factor, what);
  get_opt(j, "act_fn", c.act_fn, what);
  get_opt(j, "scaling_factor", c.scaling_factor, what);
  require_positive(c.in_channels, "in_channels", what);
  require_positive(c.out_channels, "out_channels", what);
  require_positive(c.latent_channels, "latent_channels", what);
  if (c.upsampling_scaling_factor < 1 || c.upsampling_scaling_factor > 8)
    throw ModelError("TAESD config.json: 'upsampling_scaling_factor' must be between 1 and 8");
  if (c.act_fn != "relu") throw ModelError("TAESD config.json: unsupported act_fn '" + c.act_fn + "' (only relu)");
  if (!(c.scaling_factor > 0)) throw ModelError("TAESD config.json: scaling_factor must be positive");
  // EncoderTiny/DecoderTiny chain their levels without a channel change (each level's first convolution is
  // [C_i, C_i]), so a model loads only when every level of one side has the same width.
  for (const auto& [channels, blocks, side] :
       {std::tuple{&c.encoder_block_out_channels, &c.num_encoder_blocks, "encoder"},
        std::tuple{&c.decoder_block_out_channels, &c.num_decoder_blocks, "decoder"}}) {
    if (channels->empty() || channels->size() > 8 || channels->size() != blocks->size())
      throw ModelError(std::string("TAESD config.json: the ") + side +
                       " needs 1..8 levels, one entry per level in *_block_out_channels and num_*_blocks");
    for (int ch : *channels) {
      require_positive(ch, "block_out_channels", what);
      if (ch != channels->front())
        throw ModelError(std::string("TAESD config.json: the ") + side + "'s levels differ in width");
    }
    for (int n : *blocks)
      if (n < 0 || n > 64) throw ModelError(std::string("TAESD config.json: num_") + side + "_blocks out of range");
  }
  return c;
}

}  // namespace sdcpu
