#include "nets/unet_blocks.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "kernels/activations.h"
#include "kernels/attention.h"
#include "kernels/conv2d.h"
#include "kernels/tensor_ops.h"
#include "kernels/upsample.h"

namespace sdcpu::unet {
namespace {

// torch.nn.GroupNorm refuses channel counts its group count does not divide; so do we, at load, naming the
// module, rather than at the first forward.
void check_groups(const std::string& prefix, int64_t channels, int groups) {
  if (groups <= 0 || channels % groups != 0)
    throw ModelError("unet: " + prefix + " has " + std::to_string(channels) + " channels, not divisible into " +
                     std::to_string(groups) + " norm groups");
}

ResnetBlock2D load_resnet(const WeightStore& w, const std::string& prefix, const BlockOptions& o, int64_t in_channels,
                          int64_t out_channels, float output_scale_factor = 1.0f) {
  check_groups(prefix, in_channels, o.norm_groups);
  check_groups(prefix, out_channels, o.norm_groups);
  return ResnetBlock2D::load(w, prefix, in_channels, out_channels, o.norm_groups, o.resnet_eps, o.temb_channels,
                             output_scale_factor);
}

}  // namespace

Tensor timestep_embedding(float timestep, int64_t batch, int64_t dim, bool flip_sin_to_cos, int freq_shift,
                          float max_period) {
  if (batch <= 0 || dim <= 1) throw InvalidArgument("timestep_embedding: bad batch or dimension");
  const int64_t half = dim / 2;
  if (half - freq_shift == 0) throw ModelError("unet: freq_shift equals half the timestep embedding width");
  // Each step in float32 as torch does it: the Python scalars -log(max_period) and (half - shift) become
  // float32 operands of float32 tensor ops.
  const float neg_log_period = static_cast<float>(-std::log(static_cast<double>(max_period)));
  const float divisor = static_cast<float>(half - freq_shift);
  std::vector<float> row(dim, 0.0f);
  for (int64_t i = 0; i < half; ++i) {
    const float exponent = (neg_log_period * static_cast<float>(i)) / divisor;
    const float arg = timestep * std::exp(exponent);
    // torch.cat([sin, cos]); flip_sin_to_cos swaps the halves to [cos, sin].
    row[flip_sin_to_cos ? half + i : i] = std::sin(arg);
    row[flip_sin_to_cos ? i : half + i] = std::cos(arg);
  }
  Tensor emb({batch, dim});
  for (int64_t b = 0; b < batch; ++b) std::copy(row.begin(), row.end(), emb.data() + b * dim);
  return emb;
}

TimestepEmbedding TimestepEmbedding::load(const WeightStore& w, const std::string& prefix, int64_t in_channels,
                                          int64_t time_embed_dim, int64_t cond_proj_dim) {
  TimestepEmbedding e{Linear::load(w, prefix + ".linear_1", in_channels, time_embed_dim),
                      Linear::load(w, prefix + ".linear_2", time_embed_dim, time_embed_dim), std::nullopt, 0};
  if (cond_proj_dim > 0) {
    e.cond_proj = Linear::load(w, prefix + ".cond_proj", cond_proj_dim, in_channels, /*bias=*/false);
    e.cond_proj_dim = cond_proj_dim;
  }
  return e;
}

Tensor TimestepEmbedding::operator()(const Tensor& sample, const Tensor& condition) const {
  if (!condition.empty()) {
    if (!cond_proj) throw InvalidArgument("unet: a timestep condition was given, but the UNet has no cond_proj");
    if (condition.ndim() != 2 || condition.dim(0) != sample.dim(0) || condition.dim(1) != cond_proj_dim)
      throw InvalidArgument("unet: timestep_cond must be [" + std::to_string(sample.dim(0)) + ", " +
                            std::to_string(cond_proj_dim) + "], got " + shape_to_string(condition.shape()));
    // sample = sample + self.cond_proj(condition)
    const Tensor projected = (*cond_proj)(condition);
    Tensor summed(sample.shape());
    for (int64_t i = 0; i < sample.numel(); ++i) summed[i] = sample[i] + projected[i];
    return (*this)(summed);
  }
  Tensor h = linear_1(sample);
  silu_(h);  // act_fn "silu"
  return linear_2(h);
}

Attention Attention::load(const WeightStore& w, const std::string& prefix, int64_t query_dim,
                          int64_t cross_attention_dim, int heads) {
  Attention a;
  a.to_q = Linear::load(w, prefix + ".to_q", query_dim, query_dim, /*bias=*/false);
  a.to_k = Linear::load(w, prefix + ".to_k", cross_attention_dim, query_dim, /*bias=*/false);
  a.to_v = Linear::load(w, prefix + ".to_v", cross_attention_dim, query_dim, /*bias=*/false);
  a.to_out = Linear::load(w, prefix + ".to_out.0", query_dim, query_dim);
  a.heads = heads;
  a.compute = without_int8(w.compute_type());  // the attention products have no int8 form here
  return a;
}

Tensor Attention::operator()(const Tensor& x, const Tensor& context, Tensor residual) const {
  // AttnProcessor2_0 splits heads with view/transpose; the kernel reads them interleaved in place instead.
  return to_out(attention(to_q(x), to_k(context), to_v(context), heads, /*causal=*/false, compute),
                std::move(residual));
}

FeedForward FeedForward::load(const WeightStore& w, const std::string& prefix, int64_t dim) {
  const int64_t inner = 4 * dim;  // FeedForward(mult=4)
  return {Linear::load(w, prefix + ".net.0.proj", dim, 2 * inner), Linear::load(w, prefix + ".net.2", inner, dim)};
}

Tensor FeedForward::operator()(const Tensor& x, Tensor residual) const {
  return out(geglu(proj(x)), std::move(residual));
}

BasicTransformerBlock BasicTransformerBlock::load(const WeightStore& w, const std::string& prefix, int64_t dim,
                                                  int heads, int64_t cross_attention_dim) {
  constexpr float kLayerNormEps = 1e-5f;  // BasicTransformerBlock's norm_eps default; the UNet does not set it
  return {LayerNorm::load(w, prefix + ".norm1", dim, kLayerNormEps),
          LayerNorm::load(w, prefix + ".norm2", dim, kLayerNormEps),
          LayerNorm::load(w, prefix + ".norm3", dim, kLayerNormEps),
          Attention::load(w, prefix + ".attn1", dim, dim, heads),
          Attention::load(w, prefix + ".attn2", dim, cross_attention_dim, heads),
          FeedForward::load(w, prefix + ".ff", dim)};
}

Tensor BasicTransformerBlock::operator()(Tensor x, const Tensor& encoder_hidden_states,
                                         const TokenMergeContext* tome) const {
  // hidden_states = attn_output + hidden_states, added by each branch's last linear layer into x itself
  // (kernels/linear.h); the norm is taken before x is handed over.
  Tensor h = norm1(x);
  const TokenMerge merge = tome ? tome->plan(x) : TokenMerge();  // compute_merge(hidden_states, ...)
  if (merge.merges()) {
    // ToMeBlock: hidden_states = u_a(attn1(m_a(norm_hidden_states))) + hidden_states (no residual through to_out:
    // it has the merged shape).
    const Tensor merged = merge.merge(h);
    x = merge.unmerge_add(attn1(merged, merged), std::move(x));
  } else {
    x = attn1(h, h, std::move(x));
  }
  h = norm2(x);
  x = attn2(h, encoder_hidden_states, std::move(x));
  h = norm3(x);
  return ff(h, std::move(x));
}

Transformer2DModel Transformer2DModel::load(const WeightStore& w, const std::string& prefix, int64_t channels,
                                            int heads, int num_layers, int64_t cross_attention_dim, int norm_groups) {
  // inner_dim = num_attention_heads * attention_head_dim with attention_head_dim = channels / heads.
  if (heads <= 0 || channels % heads != 0)
    throw ModelError("unet: " + prefix + " has " + std::to_string(channels) + " channels for " + std::to_string(heads) +
                     " heads");
  check_groups(prefix, channels, norm_groups);
  Transformer2DModel t;
  t.norm = GroupNorm::load(w, prefix + ".norm", channels, norm_groups, 1e-6f);
  t.proj_in = Linear::load(w, prefix + ".proj_in", channels, channels);
  for (int i = 0; i < num_layers; ++i)
    t.transformer_blocks.push_back(BasicTransformerBlock::load(w, prefix + ".transformer_blocks." + std::to_string(i),
                                                               channels, heads, cross_attention_dim));
  t.proj_out = Linear::load(w, prefix + ".proj_out", channels, channels);
  return t;
}

Tensor Transformer2DModel::operator()(const Tensor& x, const Tensor& encoder_hidden_states,
                                      const TokenMergeContext* tome) const {
  // On our channels-last image [B, H, W, C] the tokens [B, H*W, C] are the image reshaped, so diffusers'
  // permute + reshape before proj_in and after proj_out move nothing.
  const Shape tokens_shape = {x.dim(0), x.dim(1) * x.dim(2), x.dim(3)};
  Tensor h = proj_in(norm(x).reshape(tokens_shape));
  for (const auto& block : transformer_blocks) h = block(std::move(h), encoder_hidden_states, tome);
  // output = hidden_states + residual, added by proj_out (x is the caller's: copied, not overwritten).
  return proj_out(h, x.reshape(tokens_shape)).reshape(x.shape());
}

Downsample2D Downsample2D::load(const WeightStore& w, const std::string& prefix, int64_t channels, int padding) {
  if (padding < 0) throw ModelError("unet: downsample_padding must not be negative");
  return {Conv2d::load(w, prefix + ".conv", channels, channels, 3, 2, padding), padding};
}

Tensor Downsample2D::operator()(const Tensor& x) const {
  if (padding == 0)  // F.pad(hidden_states, (0, 1, 0, 1)) then the convolution without padding
    return conv.padded(x, /*top=*/0, /*left=*/0, /*bottom=*/1, /*right=*/1);
  return conv(x);
}

Upsample2D Upsample2D::load(const WeightStore& w, const std::string& prefix, int64_t channels) {
  return {Conv2d::load(w, prefix + ".conv", channels, channels, 3)};
}

Tensor Upsample2D::operator()(const Tensor& x, std::optional<std::pair<int64_t, int64_t>> output_size) const {
  // F.interpolate(scale_factor=2.0, mode="nearest"), or to output_size; the conv reads the upsampled image as the
  // upsample writes it.
  const auto [h, w] = output_size ? *output_size : std::make_pair(2 * x.dim(1), 2 * x.dim(2));
  return conv(upsample_as_conv_input(x, h, w));
}

DownBlock DownBlock::load(const WeightStore& w, const std::string& prefix, const BlockOptions& o, bool cross_attention,
                          int num_layers, int64_t in_channels, int64_t out_channels, int heads, int transformer_layers,
                          bool add_downsample, int downsample_padding) {
  DownBlock b;
  for (int i = 0; i < num_layers; ++i) {
    const std::string index = std::to_string(i);
    b.resnets.push_back(
        load_resnet(w, prefix + ".resnets." + index, o, i == 0 ? in_channels : out_channels, out_channels));
    if (cross_attention)
      b.attentions.push_back(Transformer2DModel::load(w, prefix + ".attentions." + index, out_channels, heads,
                                                      transformer_layers, o.cross_attention_dim, o.norm_groups));
  }
  if (add_downsample)
    b.downsampler = Downsample2D::load(w, prefix + ".downsamplers.0", out_channels, downsample_padding);
  return b;
}

Tensor DownBlock::layers(Tensor x, const Tensor& temb, const Tensor& encoder_hidden_states,
                         std::vector<Tensor>& res_samples, size_t count, const TokenMergeContext* tome) const {
  for (size_t i = 0; i < std::min(count, resnets.size()); ++i) {
    x = resnets[i](x, temb);
    if (!attentions.empty()) x = attentions[i](x, encoder_hidden_states, tome);
    res_samples.push_back(x);  // shares storage; nothing writes into x afterwards
  }
  return x;
}

Tensor DownBlock::operator()(Tensor x, const Tensor& temb, const Tensor& encoder_hidden_states,
                             std::vector<Tensor>& res_samples, const TokenMergeContext* tome) const {
  x = layers(std::move(x), temb, encoder_hidden_states, res_samples, resnets.size(), tome);
  if (downsampler) {
    x = (*downsampler)(x);
    res_samples.push_back(x);
  }
  return x;
}

MidBlock MidBlock::load(const WeightStore& w, const std::string& prefix, const BlockOptions& o, int64_t channels,
                        int heads, int transformer_layers, int num_layers, float output_scale_factor) {
  MidBlock b;
  b.resnets.push_back(load_resnet(w, prefix + ".resnets.0", o, channels, channels, output_scale_factor));
  for (int i = 0; i < num_layers; ++i) {
    b.attentions.push_back(Transformer2DModel::load(w, prefix + ".attentions." + std::to_string(i), channels, heads,
                                                    transformer_layers, o.cross_attention_dim, o.norm_groups));
    b.resnets.push_back(
        load_resnet(w, prefix + ".resnets." + std::to_string(i + 1), o, channels, channels, output_scale_factor));
  }
  return b;
}

Tensor MidBlock::operator()(const Tensor& x, const Tensor& temb, const Tensor& encoder_hidden_states,
                            const TokenMergeContext* tome) const {
  Tensor h = resnets[0](x, temb);
  for (size_t i = 0; i < attentions.size(); ++i)
    h = resnets[i + 1](attentions[i](h, encoder_hidden_states, tome), temb);
  return h;
}

UpBlock UpBlock::load(const WeightStore& w, const std::string& prefix, const BlockOptions& o, bool cross_attention,
                      int num_layers, int64_t in_channels, int64_t out_channels, int64_t prev_output_channels,
                      int heads, int transformer_layers, bool add_upsample) {
  UpBlock b;
  for (int i = 0; i < num_layers; ++i) {
    const std::string index = std::to_string(i);
    // The last resnet takes the skip from the previous level (in_channels); the others from this level.
    const int64_t res_skip_channels = i == num_layers - 1 ? in_channels : out_channels;
    const int64_t resnet_in_channels = i == 0 ? prev_output_channels : out_channels;
    b.resnets.push_back(
        load_resnet(w, prefix + ".resnets." + index, o, resnet_in_channels + res_skip_channels, out_channels));
    if (cross_attention)
      b.attentions.push_back(Transformer2DModel::load(w, prefix + ".attentions." + index, out_channels, heads,
                                                      transformer_layers, o.cross_attention_dim, o.norm_groups));
  }
  if (add_upsample) b.upsampler = Upsample2D::load(w, prefix + ".upsamplers.0", out_channels);
  return b;
}

Tensor UpBlock::operator()(Tensor x, const Tensor& temb, const Tensor& encoder_hidden_states,
                           std::vector<Tensor>& res_samples, std::optional<std::pair<int64_t, int64_t>> upsample_size,
                           const TokenMergeContext* tome) const {
  x = layers(std::move(x), temb, encoder_hidden_states, res_samples, 0, resnets.size(), tome);
  return upsample(std::move(x), upsample_size);
}

Tensor UpBlock::layers(Tensor x, const Tensor& temb, const Tensor& encoder_hidden_states,
                       std::vector<Tensor>& res_samples, size_t first, size_t last,
                       const TokenMergeContext* tome) const {
  for (size_t i = first; i < std::min(last, resnets.size()); ++i) {
    if (res_samples.empty()) throw InvalidArgument("unet: ran out of skip connections");
    Tensor skip = std::move(res_samples.back());
    res_samples.pop_back();
    if (skip.dim(1) != x.dim(1) || skip.dim(2) != x.dim(2))
      throw InvalidArgument("unet: skip connection " + shape_to_string(skip.shape()) + " does not fit " +
                            shape_to_string(x.shape()));
    x = resnets[i](concat_channels(x, skip), temb);  // torch.cat([hidden_states, res_hidden_states], dim=1)
    if (!attentions.empty()) x = attentions[i](x, encoder_hidden_states, tome);
  }
  return x;
}

Tensor UpBlock::upsample(Tensor x, std::optional<std::pair<int64_t, int64_t>> upsample_size) const {
  return upsampler ? (*upsampler)(x, upsample_size) : x;
}

}  // namespace sdcpu::unet
