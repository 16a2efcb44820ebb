#include "pipeline/flop_count.h"

#include <vector>

#include "core/error.h"

namespace sdcpu {
namespace {

// Mirrors UNet2DConditionModel's structure (nets/unet.cpp) for FLOPs only; shapes follow the same rules,
// including the stride-2 downsampler's rounding and the upsampler's target size (the next skip's).
class UNetFlopCounter {
 public:
  UNetFlopCounter(const UNetConfig& c, int64_t batch, int64_t text_tokens)
      : c_(c), b_(static_cast<double>(batch)), tokens_(static_cast<double>(text_tokens)) {}

  // shallow_branch >= 0: only what a shallow pass at that branch runs. The shapes are followed through every layer
  // all the same; the layers past the cut just add nothing.
  UNetFlops count(int64_t h, int64_t w, int shallow_branch) {
    const auto& ch = c_.block_out_channels;
    const int levels = static_cast<int>(ch.size());
    const int layers = c_.layers_per_block;
    const bool shallow = shallow_branch >= 0;
    const int cut_block = shallow ? shallow_branch / (layers + 1) : levels;
    const int cut_layer = shallow ? shallow_branch % (layers + 1) : 0;
    const int64_t temb = int64_t{4} * ch[0];
    if (c_.time_cond_proj_dim > 0) linear(1, c_.time_cond_proj_dim, ch[0]);  // time_embedding.cond_proj (LCM)
    linear(1, ch[0], temb);  // time_embedding.linear_1 (one row per batch element)
    linear(1, temb, temb);   // time_embedding.linear_2
    if (c_.has_text_time()) {
      // SDXL's add_embedding (TimestepEmbedding(projection_class_embeddings_input_dim, time_embed_dim)) on the
      // pooled text embeds and the sinusoidal time ids (add_time_proj: elementwise, not counted).
      linear(1, c_.projection_class_embeddings_input_dim, temb);  // add_embedding.linear_1
      linear(1, temb, temb);                                      // add_embedding.linear_2
    }
    conv(c_.in_channels, ch[0], c_.conv_in_kernel, h, w);

    struct Skip {
      int64_t channels, h, w;
    };
    std::vector<Skip> skips = {{ch[0], h, w}};
    int64_t out = ch[0];
    for (int i = 0; i < levels; ++i) {
      const int64_t in = out;
      out = ch[i];
      const bool attn = c_.down_block_types[i] == "CrossAttnDownBlock2D";
      for (int j = 0; j < c_.layers_per_block; ++j) {
        if (i == cut_block && j == cut_layer) counting_ = false;  // the cut: the deep features are reused
        resnet(j == 0 ? in : out, out, temb, h, w);
        if (attn) transformer(out, c_.transformer_layers_per_block[i], h, w);
        skips.push_back({out, h, w});
      }
      if (i == cut_block) counting_ = false;
      if (i < levels - 1) {  // Downsample2D: 3x3 stride 2; padding 0 means F.pad(0, 1, 0, 1) first
        const int64_t pad_total = c_.downsample_padding == 0 ? 1 : 2 * c_.downsample_padding;
        h = (h + pad_total - 3) / 2 + 1;
        w = (w + pad_total - 3) / 2 + 1;
        conv(out, out, 3, h, w);
        skips.push_back({out, h, w});
      }
    }

    resnet(ch.back(), ch.back(), temb, h, w);  // mid block
    transformer(ch.back(), c_.transformer_layers_per_block.back(), h, w);
    resnet(ch.back(), ch.back(), temb, h, w);

    int64_t prev = ch.back();
    for (int i = 0; i < levels; ++i) {
      const int level = levels - 1 - i;
      out = ch[level];
      const bool attn = c_.up_block_types[i] == "CrossAttnUpBlock2D";
      for (int j = 0; j < c_.layers_per_block + 1; ++j) {
        if (level == cut_block && j == layers - cut_layer) counting_ = true;  // resumes after the cut
        if (skips.empty()) throw InvalidArgument("unet flops: more up than down resolution levels");
        const Skip skip = skips.back();
        skips.pop_back();
        resnet((j == 0 ? prev : out) + skip.channels, out, temb, h, w);
        if (attn) transformer(out, c_.transformer_layers_per_block[level], h, w);
      }
      prev = out;
      if (i < levels - 1 && !skips.empty()) {  // Upsample2D: nearest to the next skip's size, then 3x3
        h = skips.back().h;
        w = skips.back().w;
        conv(out, out, 3, h, w);
      }
    }
    conv(ch[0], c_.out_channels, c_.conv_out_kernel, h, w);
    return f_;
  }

 private:
  void conv(int64_t cin, int64_t cout, int64_t k, int64_t ho, int64_t wo) {
    if (!counting_) return;
    const double flops = 2.0 * b_ * static_cast<double>(cin * cout * k * k * ho * wo);
    (k > 1 ? f_.conv3x3 : f_.conv1x1) += flops;
  }
  void linear(double m, int64_t k, int64_t n) {
    if (counting_) f_.linear += 2.0 * b_ * m * static_cast<double>(k * n);
  }
  void attention(double lq, double lk, int64_t c) {
    if (counting_) f_.attention += 2.0 * 2.0 * b_ * lq * lk * static_cast<double>(c);
  }

  void resnet(int64_t cin, int64_t cout, int64_t temb, int64_t h, int64_t w) {
    conv(cin, cout, 3, h, w);
    linear(1, temb, cout);  // time_emb_proj
    conv(cout, cout, 3, h, w);
    if (cin != cout) conv(cin, cout, 1, h, w);  // conv_shortcut
  }

  // Transformer2DModel: proj_in, `layers` BasicTransformerBlocks, proj_out. heads * head_dim = channels, so
  // the head count does not change the FLOPs.
  void transformer(int64_t c, int layers, int64_t h, int64_t w) {
    const double n = static_cast<double>(h * w);
    auto proj = [&] { c_.use_linear_projection ? linear(n, c, c) : conv(c, c, 1, h, w); };
    proj();
    const int64_t ctx = c_.cross_attention_dim;
    for (int l = 0; l < layers; ++l) {
      for (int k = 0; k < 4; ++k) linear(n, c, c);  // attn1: to_q, to_k, to_v, to_out
      attention(n, n, c);
      linear(n, c, c);  // attn2: to_q
      linear(tokens_, ctx, c);
      linear(tokens_, ctx, c);
      linear(n, c, c);  // to_out
      attention(n, tokens_, c);
      linear(n, c, 8 * c);  // ff: GEGLU proj to 2 x 4c
      linear(n, 4 * c, c);
    }
    proj();
  }

  const UNetConfig& c_;
  double b_, tokens_;
  UNetFlops f_;
  bool counting_ = true;
};

// The model's full VAE decoder (in the store's compute type, which the pipeline set) on the final latents the

}  // namespace

double count_vae_decoder_flops(const VaeConfig& c, int64_t batch, int64_t latent_h, int64_t latent_w) {
  if (batch < 1 || latent_h < 1 || latent_w < 1)
    throw InvalidArgument("vae flops: batch and latent size must be positive");
  if (c.block_out_channels.empty()) throw InvalidArgument("vae flops: no blocks");
  const double b = static_cast<double>(batch);
  int64_t h = latent_h, w = latent_w;
  double f = 0;
  auto conv = [&](int64_t cin, int64_t cout, int64_t k) {
    f += 2.0 * b * static_cast<double>(cin * cout * k * k * h * w);
  };
  auto resnet = [&](int64_t cin, int64_t cout) {
    conv(cin, cout, 3);
    conv(cout, cout, 3);
    if (cin != cout) conv(cin, cout, 1);  // conv_shortcut
  };
  // Mirrors nets/vae.cpp's VaeDecoder.
  const std::vector<int>& ch = c.block_out_channels;
  const int64_t top = ch.back();
  conv(c.latent_channels, c.latent_channels, 1);  // post_quant_conv
  conv(c.latent_channels, top, 3);                // conv_in
  resnet(top, top);                               // mid block: resnet, attention (one head of all channels), resnet
  const double tokens = static_cast<double>(h * w);
  f += 4 * 2.0 * b * tokens * static_cast<double>(top * top);     // to_q, to_k, to_v, to_out
  f += 2 * 2.0 * b * tokens * tokens * static_cast<double>(top);  // Q K^T and P V
  resnet(top, top);
  int64_t out = top;
  for (size_t i = 0; i < ch.size(); ++i) {
    const int64_t in = out;
    out = ch[ch.size() - 1 - i];
    for (int j = 0; j < c.layers_per_block + 1; ++j) resnet(j == 0 ? in : out, out);
    if (i + 1 < ch.size()) {  // Upsample2D: nearest 2x, then a 3x3 convolution at the new size
      h *= 2;
      w *= 2;
      conv(out, out, 3);
    }
  }
  conv(ch.front(), c.out_channels, 3);  // conv_out
  return f;
}

double count_taesd_decoder_flops(const TaesdConfig& c, int64_t batch, int64_t latent_h, int64_t latent_w) {
  if (batch < 1 || latent_h < 1 || latent_w < 1)
    throw InvalidArgument("taesd flops: batch and latent size must be positive");
  const double b = static_cast<double>(batch);
  int64_t h = latent_h, w = latent_w;
  double f = 0;
  auto conv3x3 = [&](int64_t cin, int64_t cout) { f += 2.0 * b * static_cast<double>(cin * cout * 9 * h * w); };
  // Mirrors nets/taesd.cpp's TaesdDecoder: conv_in, then per level its blocks (three 3x3 convolutions each, the
  // skip an identity since a level keeps its width), the upsample and one more convolution.
  const std::vector<int>& ch = c.decoder_block_out_channels;
  conv3x3(c.latent_channels, ch.front());
  for (size_t i = 0; i < ch.size(); ++i) {
    for (int j = 0; j < 3 * c.num_decoder_blocks[i]; ++j) conv3x3(ch[i], ch[i]);
    const bool last = i + 1 == ch.size();
    if (!last) {
      h *= c.upsampling_scaling_factor;
      w *= c.upsampling_scaling_factor;
    }
    conv3x3(ch[i], last ? c.out_channels : ch[i]);
  }
  return f;
}

UNetFlops count_unet_flops(const UNetConfig& config, int64_t batch, int64_t latent_h, int64_t latent_w,
                           int64_t text_tokens, int shallow_branch) {
  if (batch < 1 || latent_h < 1 || latent_w < 1 || text_tokens < 1)
    throw InvalidArgument("unet flops: batch, latent size and tokens must be positive");
  if (config.block_out_channels.empty() || config.down_block_types.size() != config.block_out_channels.size() ||
      config.up_block_types.size() != config.block_out_channels.size() ||
      config.transformer_layers_per_block.size() != config.block_out_channels.size())
    throw InvalidArgument("unet flops: inconsistent configuration");
  const int branches = static_cast<int>(config.block_out_channels.size()) * (config.layers_per_block + 1);
  if (shallow_branch >= branches) throw InvalidArgument("unet flops: no such step-caching branch");
  return UNetFlopCounter(config, batch, text_tokens).count(latent_h, latent_w, shallow_branch);
}

double count_clip_text_flops(const ClipTextConfig& c, int64_t prompts) {
  if (prompts < 1) throw InvalidArgument("clip flops: prompts must be positive");
  const double tokens = static_cast<double>(prompts) * c.max_position_embeddings;
  const double d = c.hidden_size, ffn = c.intermediate_size;
  const double per_layer = 2.0 * tokens * (4 * d * d + 2 * d * ffn)               // q, k, v, out_proj; fc1, fc2
                           + 2.0 * 2.0 * tokens * c.max_position_embeddings * d;  // Q K^T, P V (causal: all computed)
  // CLIPTextModelWithProjection (SDXL's second encoder): the bias-less text_projection on each prompt's pooled token.
  const double projection = c.with_projection ? 2.0 * static_cast<double>(prompts) * d * c.projection_dim : 0;
  return per_layer * c.num_hidden_layers + projection;
}

}  // namespace sdcpu
