// Network configurations, read from the diffusers/transformers config.json of each component or derived
// from tensor shapes for single-file checkpoints (formats/single_file.h). The networks (src/nets) are
// built entirely from these: no Stable Diffusion constant is baked into them.
#pragma once
#include <string>
#include <vector>

namespace sdcpu {

// transformers.CLIPTextConfig
struct ClipTextConfig {
  int vocab_size = 49408;
  int hidden_size = 768;
  int intermediate_size = 3072;
  int num_hidden_layers = 12;
  int num_attention_heads = 12;
  int max_position_embeddings = 77;
  std::string hidden_act = "quick_gelu";  // "quick_gelu" | "gelu"
  float layer_norm_eps = 1e-5f;
  int bos_token_id = 49406;
  int eos_token_id = 49407;
  int pad_token_id = 1;
  int projection_dim = 768;
  // transformers.CLIPTextModelWithProjection (config.json "architectures"): a bias-less text_projection
  // [projection_dim, hidden] maps the pooled output to text_embeds (SDXL's second encoder).
  bool with_projection = false;
};

// diffusers.UNet2DConditionModel (the subset Stable Diffusion 1.x/2.x and SDXL use)
struct UNetConfig {
  int in_channels = 4;
  int out_channels = 4;
  std::vector<int> block_out_channels = {320, 640, 1280, 1280};
  std::vector<std::string> down_block_types;  // "CrossAttnDownBlock2D" | "DownBlock2D"
  std::vector<std::string> up_block_types;    // "CrossAttnUpBlock2D" | "UpBlock2D"
  std::string mid_block_type = "UNetMidBlock2DCrossAttn";
  int layers_per_block = 2;
  int cross_attention_dim = 768;
  // Heads per down block (diffusers resolves the legacy `attention_head_dim`, which is really the
  // number of heads, into this). Up blocks use the list reversed.
  std::vector<int> num_attention_heads = {8, 8, 8, 8};
  std::vector<int> transformer_layers_per_block = {1, 1, 1, 1};
  int norm_num_groups = 32;
  float norm_eps = 1e-5f;
  bool use_linear_projection = false;
  bool flip_sin_to_cos = true;
  int freq_shift = 0;
  int conv_in_kernel = 3;
  int conv_out_kernel = 3;
  int downsample_padding = 1;
  int sample_size = 64;
  // addition_embed_type "text_time" (SDXL): the pooled text embeds and the 6 micro-conditioning time ids
  // (add_time_proj: Timesteps(addition_time_embed_dim)) go through add_embedding =
  // TimestepEmbedding(projection_class_embeddings_input_dim, time_embed_dim), added to the time embedding.
  // "" = none (SD 1.x/2.x).
  std::string addition_embed_type;
  int addition_time_embed_dim = 0;
  int projection_class_embeddings_input_dim = 0;
  bool has_text_time() const { return addition_embed_type == "text_time"; }
  // LCM-distilled UNets (Luo et al. 2023): the width of the guidance-scale embedding that TimestepEmbedding's
  // cond_proj adds to the timestep embedding; 0 (config null or absent): no cond_proj.
  int time_cond_proj_dim = 0;
};

// diffusers.AutoencoderKL
struct VaeConfig {
  int in_channels = 3;
  int out_channels = 3;
  int latent_channels = 4;
  std::vector<int> block_out_channels = {128, 256, 512, 512};
  int layers_per_block = 2;
  int norm_num_groups = 32;
  float scaling_factor = 0.18215f;
  float shift_factor = 0.0f;
  int sample_size = 512;
};

// diffusers.AutoencoderTiny: madebyollin's Tiny AutoEncoder for Stable Diffusion (TAESD, taesdxl). The defaults are
// diffusers' (= madebyollin/taesd's config.json).
struct TaesdConfig {
  int in_channels = 3;
  int out_channels = 3;
  int latent_channels = 4;
  std::vector<int> encoder_block_out_channels = {64, 64, 64, 64};
  std::vector<int> decoder_block_out_channels = {64, 64, 64, 64};
  std::vector<int> num_encoder_blocks = {1, 3, 3, 3};
  std::vector<int> num_decoder_blocks = {3, 3, 3, 1};
  int upsampling_scaling_factor = 2;
  std::string act_fn = "relu";
  // 1.0 for every TAESD: it decodes the UNet's latents as they are (the pipeline divides by it all the same).
  float scaling_factor = 1.0f;
};

// Parse a component's config.json text. Unknown keys are ignored; a key with the wrong type, or a
// configuration sdcpu cannot run (e.g. an unsupported block type), is a ModelError naming it.
ClipTextConfig parse_clip_text_config(const std::string& json_text);
UNetConfig parse_unet_config(const std::string& json_text);
VaeConfig parse_vae_config(const std::string& json_text);
// Also checks that the file is an AutoencoderTiny's (its _class_name, when present).
TaesdConfig parse_taesd_config(const std::string& json_text);

}  // namespace sdcpu
