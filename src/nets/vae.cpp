#include "nets/vae.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "core/error.h"
#include "kernels/attention.h"
#include "kernels/conv2d.h"
#include "kernels/tensor_ops.h"

namespace sdcpu {
namespace {

// diffusers' Encoder and Decoder pass resnet_eps=1e-6 to every block and use it for conv_norm_out too.
constexpr float kEps = 1e-6f;

std::string index(const std::string& prefix, size_t i) { return prefix + "." + std::to_string(i); }

}  // namespace

VaeAttentionBlock VaeAttentionBlock::load(const WeightStore& w, const std::string& prefix, int64_t channels, int heads,
                                          int groups, float eps) {
  VaeAttentionBlock a;
  a.group_norm = GroupNorm::load(w, prefix + ".group_norm", channels, groups, eps);
  // Original-layout checkpoints store these as 1x1 convs [C, C, 1, 1]; WeightStore serves them as [C, C].
  a.to_q = Linear::load(w, prefix + ".to_q", channels, channels);
  a.to_k = Linear::load(w, prefix + ".to_k", channels, channels);
  a.to_v = Linear::load(w, prefix + ".to_v", channels, channels);
  a.to_out = Linear::load(w, prefix + ".to_out.0", channels, channels);
  a.heads = heads;
  return a;
}

// AttnProcessor2_0 on a 4-D input: view as [N, C, H*W], group-norm over channels, transpose to tokens
// [N, H*W, C], q/k/v projections, softmax(q k^T / sqrt(C / heads)) v, to_out (dropout is the identity),
// back to [N, C, H, W], add the residual, divide by rescale_output_factor (1). On our channels-last image
// [N, H, W, C] the tokens are the image itself, reshaped: neither transpose moves anything.
Tensor VaeAttentionBlock::operator()(const Tensor& x) const {
  const Shape tokens_shape = {x.dim(0), x.dim(1) * x.dim(2), x.dim(3)};
  Tensor tokens = group_norm(x).reshape(tokens_shape);
  // The products stay fp32 even in a bf16 VAE: with a single head of all C channels, bf16 scores raised the tiny
  // fixture decoder's error (2.16% -> 2.24% of its scale; the full-size one 0.95% -> 1.0%), and this one block at
  // the lowest resolution is ~1% of the decoder's work (34 of 2515 GFLOP at 512x512), not worth the risk. The
  // projections around it follow the store's precision.
  // residual_connection=True: the residual is added by to_out (x is the caller's: copied, not overwritten).
  return to_out(attention(to_q(tokens), to_k(tokens), to_v(tokens), heads), x.reshape(tokens_shape)).reshape(x.shape());
}

// UNetMidBlock2D(in_channels=C, temb_channels=None, attention_head_dim=C, output_scale_factor=1): so
// heads = C / attention_head_dim = 1, one head as wide as the channels.
VaeMidBlock VaeMidBlock::load(const WeightStore& w, const std::string& prefix, int64_t channels, int groups,
                              float eps) {
  VaeMidBlock m;
  m.resnet0 = ResnetBlock2D::load(w, prefix + ".resnets.0", channels, channels, groups, eps);
  m.attention = VaeAttentionBlock::load(w, prefix + ".attentions.0", channels, /*heads=*/1, groups, eps);
  m.resnet1 = ResnetBlock2D::load(w, prefix + ".resnets.1", channels, channels, groups, eps);
  return m;
}

Tensor VaeMidBlock::operator()(const Tensor& x) const { return resnet1(attention(resnet0(x))); }

// ---------------------------------------------------------------------------------------------------------
// Decoder: AutoencoderKL.post_quant_conv, then diffusers.models.autoencoders.vae.Decoder.

VaeDecoder::VaeDecoder(const VaeConfig& c, const WeightStore& w) : config_(c) {
  const int groups = c.norm_num_groups;
  const std::vector<int>& ch = c.block_out_channels;
  const int64_t top = ch.back();
  // The latent comes in NCHW and the image goes out NCHW; everything between is channels-last (nets/layers.h).
  post_quant_conv_ = Conv2d::load(w, "post_quant_conv", c.latent_channels, c.latent_channels, 1, 1, 0, {});
  conv_in_ =
      Conv2d::load(w, "decoder.conv_in", c.latent_channels, top, 3, 1, 1, {ImageLayout::nchw, ImageLayout::nhwc});
  mid_block_ = VaeMidBlock::load(w, "decoder.mid_block", top, groups, kEps);
  // Up blocks walk block_out_channels reversed; block i goes from the previous block's width to its own.
  int64_t out_ch = top;
  for (size_t i = 0; i < ch.size(); ++i) {
    const int64_t in_ch = out_ch;
    out_ch = ch[ch.size() - 1 - i];
    const std::string p = index("decoder.up_blocks", i);
    UpBlock block;
    for (int j = 0; j < c.layers_per_block + 1; ++j)
      block.resnets.push_back(
          ResnetBlock2D::load(w, index(p + ".resnets", j), j == 0 ? in_ch : out_ch, out_ch, groups, kEps));
    if (i + 1 < ch.size())  // Upsample2D(use_conv=True): 3x3 conv, padding 1
      block.upsampler = Conv2d::load(w, p + ".upsamplers.0.conv", out_ch, out_ch, 3);
    up_blocks_.push_back(std::move(block));
  }
  conv_norm_out_ = GroupNorm::load(w, "decoder.conv_norm_out", ch.front(), groups, kEps);
  conv_out_ =
      Conv2d::load(w, "decoder.conv_out", ch.front(), c.out_channels, 3, 1, 1, {ImageLayout::nhwc, ImageLayout::nchw});
}

Tensor VaeDecoder::forward(const Tensor& latent) const {
  if (latent.ndim() != 4 || latent.dim(1) != config_.latent_channels || latent.dim(0) < 1 || latent.dim(2) < 1 ||
      latent.dim(3) < 1)
    throw InvalidArgument("VAE decoder: latent must be [B, " + std::to_string(config_.latent_channels) +
                          ", h, w], got " + shape_to_string(latent.shape()));
  Tensor x = conv_in_(post_quant_conv_(latent));
  x = mid_block_(x);
  for (const UpBlock& block : up_blocks_) {
    for (const ResnetBlock2D& resnet : block.resnets) x = resnet(x);
    // Upsample2D: F.interpolate(scale_factor=2.0, mode="nearest"), then the conv, which reads the upsampled
    // image as the upsample writes it.
    if (!block.upsampler.empty()) x = block.upsampler(upsample_as_conv_input(x, 2 * x.dim(1), 2 * x.dim(2)));
  }
  return conv_out_(conv_norm_out_.as_conv_input(x, /*silu=*/true));
}

// ---------------------------------------------------------------------------------------------------------
// Encoder: diffusers.models.autoencoders.vae.Encoder, then AutoencoderKL.quant_conv and
// DiagonalGaussianDistribution.

VaeEncoder::VaeEncoder(const VaeConfig& c, const WeightStore& w) : config_(c) {
  const int groups = c.norm_num_groups;
  const std::vector<int>& ch = c.block_out_channels;
  const int64_t top = ch.back(), moments = 2 * static_cast<int64_t>(c.latent_channels);  // double_z
  // The image comes in NCHW and the moments go out NCHW; everything between is channels-last (nets/layers.h).
  conv_in_ =
      Conv2d::load(w, "encoder.conv_in", c.in_channels, ch.front(), 3, 1, 1, {ImageLayout::nchw, ImageLayout::nhwc});
  int64_t out_ch = ch.front();
  for (size_t i = 0; i < ch.size(); ++i) {
    const int64_t in_ch = out_ch;
    out_ch = ch[i];
    const std::string p = index("encoder.down_blocks", i);
    DownBlock block;
    for (int j = 0; j < c.layers_per_block; ++j)
      block.resnets.push_back(
          ResnetBlock2D::load(w, index(p + ".resnets", j), j == 0 ? in_ch : out_ch, out_ch, groups, kEps));
    // Downsample2D(use_conv=True, padding=0): 3x3 conv, stride 2; the asymmetric pad is done in forward.
    if (i + 1 < ch.size()) block.downsampler = Conv2d::load(w, p + ".downsamplers.0.conv", out_ch, out_ch, 3, 2, 0);
    down_blocks_.push_back(std::move(block));
  }
  mid_block_ = VaeMidBlock::load(w, "encoder.mid_block", top, groups, kEps);
  conv_norm_out_ = GroupNorm::load(w, "encoder.conv_norm_out", top, groups, kEps);
  conv_out_ = Conv2d::load(w, "encoder.conv_out", top, moments, 3, 1, 1, {ImageLayout::nhwc, ImageLayout::nchw});
  quant_conv_ = Conv2d::load(w, "quant_conv", moments, moments, 1, 1, 0, {});
}

VaeEncoder::Output VaeEncoder::forward(const Tensor& image) const {
  if (image.ndim() != 4 || image.dim(1) != config_.in_channels || image.dim(0) < 1 || image.dim(2) < 1 ||
      image.dim(3) < 1)
    throw InvalidArgument("VAE encoder: image must be [B, " + std::to_string(config_.in_channels) + ", H, W], got " +
                          shape_to_string(image.shape()));
  Tensor x = conv_in_(image);
  for (const DownBlock& block : down_blocks_) {
    for (const ResnetBlock2D& resnet : block.resnets) x = resnet(x);
    if (!block.downsampler.empty()) {
      // Downsample2D with padding=0 pads F.pad(x, (0, 1, 0, 1)): one zero row below and one column to the
      // right only, then convolves without padding. The conv kernel takes the sides separately.
      x = block.downsampler.padded(x, /*top=*/0, /*left=*/0, /*bottom=*/1, /*right=*/1);
    }
  }
  x = mid_block_(x);
  Tensor moments = quant_conv_(conv_out_(conv_norm_out_.as_conv_input(x, /*silu=*/true)));

  // DiagonalGaussianDistribution: mean, logvar = chunk(moments, 2, dim=1); logvar clamped to [-30, 20];
  // std = exp(0.5 * logvar).
  const int64_t b = moments.dim(0), lc = config_.latent_channels, hw = moments.dim(2) * moments.dim(3);
  Output out{Tensor({b, lc, moments.dim(2), moments.dim(3)}), Tensor({b, lc, moments.dim(2), moments.dim(3)})};
  for (int64_t n = 0; n < b; ++n) {
    const float* src = moments.data() + n * 2 * lc * hw;
    std::copy(src, src + lc * hw, out.mean.data() + n * lc * hw);
    const float* logvar = src + lc * hw;
    float* s = out.std.data() + n * lc * hw;
    for (int64_t i = 0; i < lc * hw; ++i) s[i] = std::exp(0.5f * std::clamp(logvar[i], -30.0f, 20.0f));
  }
  return out;
}

}  // namespace sdcpu
