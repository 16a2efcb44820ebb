// The modules UNet2DConditionModel is assembled from, one struct per diffusers class, each loaded from a
// WeightStore under its module path (e.g. "down_blocks.1.attentions.0.transformer_blocks.0.attn2") and then
// applied like a function. ResnetBlock2D is shared with the VAE (nets/resnet_block.h).
//
// Only the configuration Stable Diffusion 1.x/2.x uses: SiLU, time_embedding_norm "default", GEGLU
// feed-forward, LayerNorm transformer blocks, no attention masks, dropout as the identity (inference).
#pragma once
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "formats/weight_store.h"
#include "nets/layers.h"
#include "nets/resnet_block.h"
#include "nets/token_merging.h"

namespace sdcpu::unet {

// diffusers.models.embeddings.get_timestep_embedding for one timestep repeated `batch` times, in float32
// as diffusers computes it: exponent = -ln(max_period) * arange(half) / (half - freq_shift); emb = t *
// exp(exponent); [sin, cos] (or [cos, sin] with flip_sin_to_cos); zero-padded to an odd `dim`.
// Returns [batch, dim]. (Ho et al. 2020, after Vaswani et al. 2017.)
Tensor timestep_embedding(float timestep, int64_t batch, int64_t dim, bool flip_sin_to_cos, int freq_shift,
                          float max_period = 10000.0f);

// diffusers.models.embeddings.TimestepEmbedding: [sample + cond_proj(condition)] -> linear_1 -> SiLU -> linear_2
// (no post_act). cond_proj (Linear cond_proj_dim -> in_channels, no bias) exists only in LCM-distilled UNets
// (time_cond_proj_dim), where the condition is the guidance-scale embedding.
struct TimestepEmbedding {
  Linear linear_1, linear_2;
  std::optional<Linear> cond_proj;
  int64_t cond_proj_dim = 0;
  // cond_proj_dim 0: no cond_proj.
  static TimestepEmbedding load(const WeightStore& w, const std::string& prefix, int64_t in_channels,
                                int64_t time_embed_dim, int64_t cond_proj_dim = 0);
  // condition [batch, cond_proj_dim], or empty for none.
  Tensor operator()(const Tensor& sample, const Tensor& condition = {}) const;
};

// diffusers.models.attention_processor.Attention with AttnProcessor2_0: to_q/to_k/to_v without bias,
// scaled dot-product attention over `heads` heads of width dim_head (scale dim_head^-0.5), to_out.0 with
// bias (to_out.1 is dropout). Self-attention when called without a context.
struct Attention {
  Linear to_q, to_k, to_v, to_out;
  int heads = 1;
  ComputeType compute = ComputeType::f32;  // of the two attention products, the weight store's
  // query_dim = heads * dim_head (the block's channels); cross_attention_dim = query_dim for self-attention.
  static Attention load(const WeightStore& w, const std::string& prefix, int64_t query_dim, int64_t cross_attention_dim,
                        int heads);
  // x [B, L, query_dim], context [B, Lc, cross_attention_dim] (or x itself) -> [B, L, query_dim], + residual
  // when given (added by to_out; see kernels/linear.h on passing it with std::move).
  Tensor operator()(const Tensor& x, const Tensor& context, Tensor residual = Tensor()) const;
};

// diffusers.models.attention.FeedForward with activation_fn "geglu", mult 4: net.0 = GEGLU (its `proj`
// maps dim -> 2 * inner), net.1 = dropout, net.2 = Linear(inner, dim). GEGLU: Shazeer 2020.
struct FeedForward {
  Linear proj;  // ff.net.0.proj
  Linear out;   // ff.net.2
  static FeedForward load(const WeightStore& w, const std::string& prefix, int64_t dim);
  // + residual when given, added by net.2.
  Tensor operator()(const Tensor& x, Tensor residual = Tensor()) const;
};

// diffusers.models.attention.BasicTransformerBlock, norm_type "layer_norm" (eps 1e-5, affine):
// x += attn1(norm1(x)); x += attn2(norm2(x), encoder_hidden_states); x += ff(norm3(x)).
// With token merging (nets/token_merging.h) the block is tomesd's ToMeBlock (patch.make_diffusers_tome_block, its
// defaults): x += unmerge(attn1(merge(norm1(x)))), the plan made from the block's input x.
struct BasicTransformerBlock {
  LayerNorm norm1, norm2, norm3;
  Attention attn1, attn2;
  FeedForward ff;
  static BasicTransformerBlock load(const WeightStore& w, const std::string& prefix, int64_t dim, int heads,
                                    int64_t cross_attention_dim);
  // x [B, L, dim] is updated in place (its storage must not be shared with anything still needed) and returned.
  // `tome`: token merging for this UNet pass, or none.
  Tensor operator()(Tensor x, const Tensor& encoder_hidden_states, const TokenMergeContext* tome = nullptr) const;
};

// diffusers.models.transformers.transformer_2d.Transformer2DModel for continuous (image) input:
// GroupNorm (eps 1e-6) -> proj_in -> flatten to tokens -> transformer_blocks -> proj_out -> unflatten ->
// + residual. proj_in/proj_out are 1x1 convolutions (applied before flattening / after unflattening) or,
// with use_linear_projection, Linear layers on the tokens; a 1x1 convolution is the same linear map on
// every pixel, so both run here as Linear on the [B, H*W, C] tokens (the checkpoint's [O, I, 1, 1] conv
// kernel is read as the [O, I] matrix).
struct Transformer2DModel {
  GroupNorm norm;
  Linear proj_in, proj_out;
  std::vector<BasicTransformerBlock> transformer_blocks;
  static Transformer2DModel load(const WeightStore& w, const std::string& prefix, int64_t channels, int heads,
                                 int num_layers, int64_t cross_attention_dim, int norm_groups);
  // x [B, H, W, C] (channels-last), encoder_hidden_states [B, L, cross_attention_dim] -> [B, H, W, C].
  Tensor operator()(const Tensor& x, const Tensor& encoder_hidden_states,
                    const TokenMergeContext* tome = nullptr) const;
};

// diffusers.models.downsampling.Downsample2D with use_conv: a 3x3 convolution, stride 2. padding 0 means
// F.pad(x, (0, 1, 0, 1)) first, as diffusers does.
struct Downsample2D {
  Conv2d conv;
  int padding = 1;
  static Downsample2D load(const WeightStore& w, const std::string& prefix, int64_t channels, int padding);
  Tensor operator()(const Tensor& x) const;
};

// diffusers.models.upsampling.Upsample2D with use_conv: nearest 2x (or nearest to `output_size`, which the
// UNet forwards when the latent is not divisible by 2**levels), then a 3x3 convolution.
struct Upsample2D {
  Conv2d conv;
  static Upsample2D load(const WeightStore& w, const std::string& prefix, int64_t channels);
  Tensor operator()(const Tensor& x, std::optional<std::pair<int64_t, int64_t>> output_size) const;
};

// Settings every block of one UNet shares.
struct BlockOptions {
  int64_t temb_channels = 0;  // time_embed_dim
  int64_t cross_attention_dim = 0;
  int norm_groups = 32;      // resnet_groups (also the Transformer2DModel's norm_num_groups)
  float resnet_eps = 1e-5f;  // norm_eps
};

// diffusers.models.unets.unet_2d_blocks.CrossAttnDownBlock2D, or DownBlock2D when it has no attentions:
// per layer resnet (-> attention), each output kept for the skip connections, then the optional
// downsampler whose output is kept as well.
struct DownBlock {
  std::vector<ResnetBlock2D> resnets;
  std::vector<Transformer2DModel> attentions;  // empty for DownBlock2D
  std::optional<Downsample2D> downsampler;     // downsamplers.0
  static DownBlock load(const WeightStore& w, const std::string& prefix, const BlockOptions& o, bool cross_attention,
                        int num_layers, int64_t in_channels, int64_t out_channels, int heads, int transformer_layers,
                        bool add_downsample, int downsample_padding);
  // Appends its output states to `res_samples` and returns the block's output.
  Tensor operator()(Tensor x, const Tensor& temb, const Tensor& encoder_hidden_states, std::vector<Tensor>& res_samples,
                    const TokenMergeContext* tome = nullptr) const;
  // Only the first `count` (resnet, attention) layers, without the downsampler: a shallow pass (UNetStepCache).
  Tensor layers(Tensor x, const Tensor& temb, const Tensor& encoder_hidden_states, std::vector<Tensor>& res_samples,
                size_t count, const TokenMergeContext* tome = nullptr) const;
};

// diffusers.models.unets.unet_2d_blocks.UNetMidBlock2DCrossAttn: resnets.0, then (attention, resnet) pairs.
struct MidBlock {
  std::vector<ResnetBlock2D> resnets;
  std::vector<Transformer2DModel> attentions;
  static MidBlock load(const WeightStore& w, const std::string& prefix, const BlockOptions& o, int64_t channels,
                       int heads, int transformer_layers, int num_layers = 1, float output_scale_factor = 1.0f);
  Tensor operator()(const Tensor& x, const Tensor& temb, const Tensor& encoder_hidden_states,
                    const TokenMergeContext* tome = nullptr) const;
};

// diffusers.models.unets.unet_2d_blocks.CrossAttnUpBlock2D, or UpBlock2D without attentions: per layer,
// concatenate the newest skip connection on channels, resnet (-> attention); then the optional upsampler.
struct UpBlock {
  std::vector<ResnetBlock2D> resnets;
  std::vector<Transformer2DModel> attentions;  // empty for UpBlock2D
  std::optional<Upsample2D> upsampler;         // upsamplers.0
  static UpBlock load(const WeightStore& w, const std::string& prefix, const BlockOptions& o, bool cross_attention,
                      int num_layers, int64_t in_channels, int64_t out_channels, int64_t prev_output_channels,
                      int heads, int transformer_layers, bool add_upsample);
  // Consumes resnets.size() skip connections from the back of `res_samples`.
  Tensor operator()(Tensor x, const Tensor& temb, const Tensor& encoder_hidden_states, std::vector<Tensor>& res_samples,
                    std::optional<std::pair<int64_t, int64_t>> upsample_size,
                    const TokenMergeContext* tome = nullptr) const;
  // The (resnet, attention) layers [first, last) alone, one skip connection each; then upsample() completes the
  // block. A full pass that caches stops between two layers (UNetStepCache).
  Tensor layers(Tensor x, const Tensor& temb, const Tensor& encoder_hidden_states, std::vector<Tensor>& res_samples,
                size_t first, size_t last, const TokenMergeContext* tome = nullptr) const;
  Tensor upsample(Tensor x, std::optional<std::pair<int64_t, int64_t>> upsample_size) const;
};

}  // namespace sdcpu::unet
