#include "nets/unet.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <utility>

#include "core/error.h"
#include "kernels/activations.h"
#include "kernels/tensor_ops.h"

namespace sdcpu {
namespace {

// parse_unet_config validates config.json; a UNetConfig can also be built by hand or derived from tensor
// shapes (single-file checkpoints), so the model checks what it relies on once more.
void validate(const UNetConfig& c) {
  const size_t blocks = c.block_out_channels.size();
  if (blocks == 0) throw ModelError("unet: block_out_channels is empty");
  if (c.down_block_types.size() != blocks || c.up_block_types.size() != blocks ||
      c.num_attention_heads.size() != blocks || c.transformer_layers_per_block.size() != blocks)
    throw ModelError(
        "unet: down/up_block_types, num_attention_heads and transformer_layers_per_block need one "
        "entry per block_out_channels");
  for (size_t i = 0; i < blocks; ++i) {
    if (c.down_block_types[i] != "CrossAttnDownBlock2D" && c.down_block_types[i] != "DownBlock2D")
      throw ModelError("unet: unsupported down block type '" + c.down_block_types[i] + "'");
    if (c.up_block_types[i] != "CrossAttnUpBlock2D" && c.up_block_types[i] != "UpBlock2D")
      throw ModelError("unet: unsupported up block type '" + c.up_block_types[i] + "'");
    if (c.block_out_channels[i] <= 0 || c.num_attention_heads[i] <= 0 || c.transformer_layers_per_block[i] <= 0)
      throw ModelError("unet: block " + std::to_string(i) + " has a non-positive channel, head or layer count");
  }
  if (c.mid_block_type != "UNetMidBlock2DCrossAttn")
    throw ModelError("unet: unsupported mid_block_type '" + c.mid_block_type + "'");
  if (c.in_channels <= 0 || c.out_channels <= 0 || c.layers_per_block <= 0 || c.cross_attention_dim <= 0 ||
      c.norm_num_groups <= 0)
    throw ModelError("unet: non-positive in/out channels, layers_per_block, cross_attention_dim or norm_num_groups");
  if (!c.addition_embed_type.empty() && !c.has_text_time())
    throw ModelError("unet: unsupported addition_embed_type '" + c.addition_embed_type + "'");
  if (c.has_text_time() && (c.addition_time_embed_dim <= 1 || c.projection_class_embeddings_input_dim <= 0))
    throw ModelError(
        "unet: addition_embed_type \"text_time\" needs addition_time_embed_dim > 1 and "
        "projection_class_embeddings_input_dim > 0");
  if (c.conv_in_kernel <= 0 || c.conv_in_kernel % 2 == 0 || c.conv_out_kernel <= 0 || c.conv_out_kernel % 2 == 0)
    throw ModelError("unet: conv_in_kernel and conv_out_kernel must be odd");
}

}  // namespace

UNet2DConditionModel::UNet2DConditionModel(const UNetConfig& config, const WeightStore& w) : config_(config) {
  validate(config_);
  const auto& channels = config_.block_out_channels;
  const int levels = static_cast<int>(channels.size());
  // time_proj = Timesteps(block_out_channels[0], ...); time_embedding = TimestepEmbedding(c0, 4 c0).
  time_embed_dim_ = static_cast<int64_t>(channels[0]) * 4;
  // With time_cond_proj_dim (LCM): TimestepEmbedding(c0, 4 c0, cond_proj_dim=time_cond_proj_dim).
  time_embedding_ =
      unet::TimestepEmbedding::load(w, "time_embedding", channels[0], time_embed_dim_, config_.time_cond_proj_dim);
  if (config_.has_text_time())
    add_embedding_ = unet::TimestepEmbedding::load(w, "add_embedding", config_.projection_class_embeddings_input_dim,
                                                   time_embed_dim_);
  // conv_in padding (conv_in_kernel - 1) // 2, as Conv2d::load's default for odd kernels.
  // The sample comes in NCHW and the prediction goes out NCHW; everything between is channels-last
  // (nets/layers.h).
  conv_in_ = Conv2d::load(w, "conv_in", config_.in_channels, channels[0], config_.conv_in_kernel, 1, -1,
                          {ImageLayout::nchw, ImageLayout::nhwc});

  const unet::BlockOptions options{time_embed_dim_, config_.cross_attention_dim, config_.norm_num_groups,
                                   config_.norm_eps};
  int64_t output_channel = channels[0];
  for (int i = 0; i < levels; ++i) {
    const int64_t input_channel = output_channel;
    output_channel = channels[i];
    const bool is_final_block = i == levels - 1;
    down_blocks_.push_back(unet::DownBlock::load(
        w, "down_blocks." + std::to_string(i), options, config_.down_block_types[i] == "CrossAttnDownBlock2D",
        config_.layers_per_block, input_channel, output_channel, config_.num_attention_heads[i],
        config_.transformer_layers_per_block[i], /*add_downsample=*/!is_final_block, config_.downsample_padding));
  }

  // mid_block_scale_factor is 1 in every Stable Diffusion config (UNetConfig does not carry it).
  mid_block_ = unet::MidBlock::load(w, "mid_block", options, channels.back(), config_.num_attention_heads.back(),
                                    config_.transformer_layers_per_block.back());

  // Up blocks walk the levels in reverse, with the per-level lists reversed.
  output_channel = channels.back();
  for (int i = 0; i < levels; ++i) {
    const int level = levels - 1 - i;
    const int64_t prev_output_channel = output_channel;
    output_channel = channels[level];
    const int64_t input_channel = channels[std::max(level - 1, 0)];  // reversed[min(i + 1, levels - 1)]
    const bool is_final_block = i == levels - 1;
    up_blocks_.push_back(unet::UpBlock::load(
        w, "up_blocks." + std::to_string(i), options, config_.up_block_types[i] == "CrossAttnUpBlock2D",
        config_.layers_per_block + 1, input_channel, output_channel, prev_output_channel,
        config_.num_attention_heads[level], config_.transformer_layers_per_block[level],
        /*add_upsample=*/!is_final_block));
  }

  if (channels[0] % config_.norm_num_groups != 0)
    throw ModelError("unet: conv_norm_out has " + std::to_string(channels[0]) + " channels, not divisible into " +
                     std::to_string(config_.norm_num_groups) + " norm groups");
  conv_norm_out_ = GroupNorm::load(w, "conv_norm_out", channels[0], config_.norm_num_groups, config_.norm_eps);
  conv_out_ = Conv2d::load(w, "conv_out", channels[0], config_.out_channels, config_.conv_out_kernel, 1, -1,
                           {ImageLayout::nhwc, ImageLayout::nchw});
}

Tensor UNet2DConditionModel::forward(const Tensor& sample, float timestep, const Tensor& encoder_hidden_states,
                                     const TokenMergeContext* tome) const {
  return run(sample, timestep, encoder_hidden_states, AddedConditions{}, PassKind::full, 0, nullptr, tome);
}

Tensor UNet2DConditionModel::time_embedding(float timestep, int64_t batch, const AddedConditions& added) const {
  Tensor emb = time_embedding_(unet::timestep_embedding(timestep, batch, config_.block_out_channels[0],
                                                        config_.flip_sin_to_cos, config_.freq_shift),
                               added.timestep_cond);
  const bool given = !added.text_embeds.empty() || !added.time_ids.empty();
  if (!config_.has_text_time()) {
    if (given) throw InvalidArgument("unet: text_embeds/time_ids given to a UNet without addition_embed_type");
    return emb;
  }
  // get_aug_embed, "text_time": time_embeds = add_time_proj(time_ids.flatten()).reshape(B, -1);
  // add_embeds = concat([text_embeds, time_embeds], -1); emb = emb + add_embedding(add_embeds).
  const Tensor& text = added.text_embeds;
  const Tensor& ids = added.time_ids;
  const int64_t time_dim = config_.addition_time_embed_dim;
  if (text.ndim() != 2 || text.dim(0) != batch || ids.ndim() != 2 || ids.dim(0) != batch ||
      text.dim(1) + ids.dim(1) * time_dim != config_.projection_class_embeddings_input_dim)
    throw InvalidArgument("unet: addition_embed_type \"text_time\" needs text_embeds [" + std::to_string(batch) +
                          ", P] and time_ids [" + std::to_string(batch) + ", T] with P + T * " +
                          std::to_string(time_dim) + " = projection_class_embeddings_input_dim " +
                          std::to_string(config_.projection_class_embeddings_input_dim) + ", got " +
                          shape_to_string(text.shape()) + " and " + shape_to_string(ids.shape()));
  const int64_t text_dim = text.dim(1), id_count = ids.dim(1), width = config_.projection_class_embeddings_input_dim;
  Tensor add_embeds({batch, width});
  for (int64_t b = 0; b < batch; ++b) {
    float* row = add_embeds.data() + b * width;
    std::copy_n(text.data() + b * text_dim, text_dim, row);
    for (int64_t k = 0; k < id_count; ++k) {
      const float id = ids.data()[b * id_count + k];
      if (!std::isfinite(id)) throw InvalidArgument("unet: a time id is not a finite number");
      const Tensor proj = unet::timestep_embedding(id, 1, time_dim, config_.flip_sin_to_cos, config_.freq_shift);
      std::copy_n(proj.data(), time_dim, row + text_dim + k * time_dim);
    }
  }
  add_(emb, add_embedding_(add_embeds));
  return emb;
}

Tensor UNet2DConditionModel::forward(const Tensor& sample, float timestep, const Tensor& encoder_hidden_states,
                                     const AddedConditions& added, const TokenMergeContext* tome) const {
  return run(sample, timestep, encoder_hidden_states, added, PassKind::full, 0, nullptr, tome);
}

Tensor UNet2DConditionModel::forward_and_cache(const Tensor& sample, float timestep,
                                               const Tensor& encoder_hidden_states, UNetStepCache& cache,
                                               const AddedConditions& added, const TokenMergeContext* tome) const {
  return run(sample, timestep, encoder_hidden_states, added, PassKind::full_and_cache, cache.branch,
             &cache.deep_features, tome);
}

Tensor UNet2DConditionModel::forward_shallow(const Tensor& sample, float timestep, const Tensor& encoder_hidden_states,
                                             const UNetStepCache& cache, const AddedConditions& added,
                                             const TokenMergeContext* tome) const {
  // The features are only read: the shallow pass's first layer concatenates them with a skip connection into a new
  // tensor.
  Tensor features = cache.deep_features;
  return run(sample, timestep, encoder_hidden_states, added, PassKind::shallow, cache.branch, &features, tome);
}

int UNet2DConditionModel::deep_cache_branches() const {
  return static_cast<int>(config_.block_out_channels.size()) * (config_.layers_per_block + 1);
}

Tensor UNet2DConditionModel::run(const Tensor& sample, float timestep, const Tensor& encoder_hidden_states,
                                 const AddedConditions& added, PassKind kind, int branch, Tensor* deep_features,
                                 const TokenMergeContext* tome) const {
  if (sample.ndim() != 4 || sample.dim(0) <= 0 || sample.dim(1) != config_.in_channels || sample.dim(2) <= 0 ||
      sample.dim(3) <= 0)
    throw InvalidArgument("unet: sample must be [batch, " + std::to_string(config_.in_channels) +
                          ", height, width], got " + shape_to_string(sample.shape()));
  if (encoder_hidden_states.ndim() != 3 || encoder_hidden_states.dim(0) != sample.dim(0) ||
      encoder_hidden_states.dim(1) <= 0 || encoder_hidden_states.dim(2) != config_.cross_attention_dim)
    throw InvalidArgument("unet: encoder_hidden_states must be [" + std::to_string(sample.dim(0)) + ", tokens, " +
                          std::to_string(config_.cross_attention_dim) + "], got " +
                          shape_to_string(encoder_hidden_states.shape()));
  if (!std::isfinite(timestep)) throw InvalidArgument("unet: the timestep is not a finite number");
  if (tome && (tome->latent_h != sample.dim(2) || tome->latent_w != sample.dim(3)))
    throw InvalidArgument("unet: token merging was set up for another latent size");
  const int64_t batch = sample.dim(0);
  const int levels = static_cast<int>(config_.block_out_channels.size());

  // The cut of a caching pass: down block `cut_block` runs its first `cut_layer` layers; up block
  // levels - 1 - cut_block (the one at the same resolution) resumes at its layer `resume_layer` (its layers are the
  // down block's mirrored, plus one).
  int cut_block = levels, cut_layer = 0;
  size_t resume_layer = 0;
  if (kind != PassKind::full) {
    if (branch < 0 || branch >= deep_cache_branches())
      throw InvalidArgument("unet: step-caching branch must be between 0 and " +
                            std::to_string(deep_cache_branches() - 1) + ", got " + std::to_string(branch));
    cut_block = branch / (config_.layers_per_block + 1);
    cut_layer = branch % (config_.layers_per_block + 1);
    resume_layer = static_cast<size_t>(config_.layers_per_block - cut_layer);
  }
  const int cut_up_block = levels - 1 - cut_block;

  // 0. When the latent is not a multiple of the overall upsampling factor, every upsampler is told the size
  // of the skip connection it feeds (forward_upsample_size in diffusers).
  const int64_t overall_up_factor = int64_t{1} << (levels - 1);
  const bool forward_upsample_size = sample.dim(2) % overall_up_factor != 0 || sample.dim(3) % overall_up_factor != 0;

  // 1. time: time_proj -> time_embedding (+ the added conditions). Every ResnetBlock2D applies SiLU to it before
  // its own time_emb_proj.
  const Tensor emb = time_embedding(timestep, batch, added);

  // 2. pre-process
  Tensor h = conv_in_(sample);

  // 3. down (a shallow pass stops at the cut: what lies past it only feeds the deep features it reuses)
  std::vector<Tensor> down_block_res_samples = {h};
  for (int i = 0; i < levels; ++i) {
    if (kind == PassKind::shallow && i == cut_block) {
      h = down_blocks_[i].layers(std::move(h), emb, encoder_hidden_states, down_block_res_samples, cut_layer, tome);
      break;
    }
    h = down_blocks_[i](std::move(h), emb, encoder_hidden_states, down_block_res_samples, tome);
  }

  // 4. mid
  if (kind != PassKind::shallow) h = mid_block_(h, emb, encoder_hidden_states, tome);

  // 5. up
  for (int i = kind == PassKind::shallow ? cut_up_block : 0; i < levels; ++i) {
    const auto& block = up_blocks_[i];
    // The layers this pass runs: the cut block resumes after the cut on a shallow pass, from the deep features.
    size_t first = 0;
    if (kind == PassKind::shallow && i == cut_up_block) {
      if (deep_features->ndim() != 4 || deep_features->dim(0) != batch)
        throw InvalidArgument("unet: a shallow pass needs the deep features of a full pass on the same batch");
      h = std::move(*deep_features);
      first = resume_layer;
    }
    // The size the upsampler must reach is that of the skip connection left after this block takes its own.
    std::optional<std::pair<int64_t, int64_t>> upsample_size;
    if (block.upsampler && forward_upsample_size) {
      const size_t taken = block.resnets.size() - first;
      if (down_block_res_samples.size() <= taken) throw InvalidArgument("unet: more up than down resolution levels");
      const Tensor& next = down_block_res_samples[down_block_res_samples.size() - 1 - taken];
      upsample_size = std::make_pair(next.dim(1), next.dim(2));  // channels-last [B, H, W, C]
    }
    if (kind == PassKind::full_and_cache && i == cut_up_block) {
      h = block.layers(std::move(h), emb, encoder_hidden_states, down_block_res_samples, 0, resume_layer, tome);
      *deep_features = h;  // shares storage; nothing writes into h afterwards
      first = resume_layer;
    }
    h = block.layers(std::move(h), emb, encoder_hidden_states, down_block_res_samples, first, block.resnets.size(),
                     tome);
    h = block.upsample(std::move(h), upsample_size);
  }

  // 6. post-process: conv_norm_out -> conv_act (SiLU) -> conv_out
  return conv_out_(conv_norm_out_.as_conv_input(h, /*silu=*/true));
}

}  // namespace sdcpu
