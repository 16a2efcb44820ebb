#include "nets/taesd.h"

#include <cmath>
#include <string>

#include "core/error.h"

namespace sdcpu {
namespace {

std::string layer(const char* side, int i) { return std::string(side) + ".layers." + std::to_string(i); }

// The convolution with the ReLU that follows it in the Sequential fused into it.
Conv2d with_relu(Conv2d conv) {
  conv.prepared = conv.prepared.with_relu();
  return conv;
}

}  // namespace

TaesdBlock TaesdBlock::load(const WeightStore& w, const std::string& prefix, int64_t in_channels,
                            int64_t out_channels) {
  TaesdBlock b;
  b.conv0 = with_relu(Conv2d::load(w, prefix + ".conv.0", in_channels, out_channels, 3));
  b.conv2 = with_relu(Conv2d::load(w, prefix + ".conv.2", out_channels, out_channels, 3));
  b.conv4 = with_relu(Conv2d::load(w, prefix + ".conv.4", out_channels, out_channels, 3));  // + skip, then fuse
  if (in_channels != out_channels)
    b.skip = Conv2d::load(w, prefix + ".skip", in_channels, out_channels, 1, 1, 0, kChannelsLast, /*bias=*/false);
  return b;
}

Tensor TaesdBlock::operator()(Tensor x) const {
  const Tensor h = conv2(conv0(x));
  // fuse(conv(x) + skip(x)): conv.4 adds the skip into its output and applies the ReLU (kernels/conv2d.h).
  Tensor skipped = skip.empty() ? std::move(x) : skip(x);
  return conv4(h, std::move(skipped));
}

// ---------------------------------------------------------------------------------------------------------
// DecoderTiny: layers = [conv(latent -> C0), ReLU, then per level i: num_blocks[i] x block(C_i), Upsample (not in
// the last level), conv(C_i -> C_i, bias=False) or, in the last level, conv(C_i -> out_channels)].

TaesdDecoder::TaesdDecoder(const TaesdConfig& c, const WeightStore& w) : config_(c) {
  const std::vector<int>& ch = c.decoder_block_out_channels;
  // The latent comes in NCHW and the image goes out NCHW; everything between is channels-last (nets/layers.h).
  conv_in_ = with_relu(
      Conv2d::load(w, layer("decoder", 0), c.latent_channels, ch[0], 3, 1, 1, {ImageLayout::nchw, ImageLayout::nhwc}));
  int index = 2;  // layers.1 is the ReLU
  for (size_t i = 0; i < ch.size(); ++i) {
    const bool last = i + 1 == ch.size();
    Level level;
    for (int j = 0; j < c.num_decoder_blocks[i]; ++j)
      level.blocks.push_back(TaesdBlock::load(w, layer("decoder", index++), ch[i], ch[i]));
    if (!last) {
      level.upsample = true;
      ++index;  // nn.Upsample has no parameters
    }
    level.conv = last
                     ? Conv2d::load(w, layer("decoder", index++), ch[i], c.out_channels, 3, 1, 1,
                                    {ImageLayout::nhwc, ImageLayout::nchw})
                     : Conv2d::load(w, layer("decoder", index++), ch[i], ch[i], 3, 1, 1, kChannelsLast, /*bias=*/false);
    levels_.push_back(std::move(level));
  }
}

int64_t TaesdDecoder::upscale() const {
  int64_t f = 1;
  for (size_t i = 1; i < levels_.size(); ++i) f *= config_.upsampling_scaling_factor;
  return f;
}

Tensor TaesdDecoder::forward(const Tensor& latent) const {
  if (latent.ndim() != 4 || latent.dim(1) != config_.latent_channels || latent.dim(0) < 1 || latent.dim(2) < 1 ||
      latent.dim(3) < 1)
    throw InvalidArgument("TAESD decoder: latent must be [B, " + std::to_string(config_.latent_channels) +
                          ", h, w], got " + shape_to_string(latent.shape()));
  // DecoderTiny.forward: "Clamp." x = torch.tanh(x / 3) * 3 (divided, not multiplied by 1/3, to round as torch).
  Tensor clamped(latent.shape());
  for (int64_t j = 0; j < latent.numel(); ++j) clamped[j] = std::tanh(latent[j] / 3.0f) * 3.0f;
  Tensor x = conv_in_(clamped);
  const int64_t f = config_.upsampling_scaling_factor;
  for (const Level& level : levels_) {
    for (const TaesdBlock& block : level.blocks) x = block(std::move(x));
    // nn.Upsample(scale_factor=f), mode "nearest", written straight into the convolution's input.
    x = level.upsample ? level.conv(upsample_as_conv_input(x, f * x.dim(1), f * x.dim(2))) : level.conv(x);
  }
  // "scale image from [0, 1] to [-1, 1] to match diffusers convention": x.mul(2).sub(1).
  for (int64_t j = 0; j < x.numel(); ++j) x[j] = x[j] * 2.0f - 1.0f;
  return x;
}

// ---------------------------------------------------------------------------------------------------------
// EncoderTiny: layers = per level i: conv(in_channels -> C0) for i = 0, else conv(C_i -> C_i, stride 2, padding 1,
// bias=False); then num_blocks[i] x block(C_i); and last conv(C_last -> latent_channels).

TaesdEncoder::TaesdEncoder(const TaesdConfig& c, const WeightStore& w) : config_(c) {
  const std::vector<int>& ch = c.encoder_block_out_channels;
  int index = 0;
  for (size_t i = 0; i < ch.size(); ++i) {
    Level level;
    level.conv = i == 0 ? Conv2d::load(w, layer("encoder", index++), c.in_channels, ch[0], 3, 1, 1,
                                       {ImageLayout::nchw, ImageLayout::nhwc})
                        : Conv2d::load(w, layer("encoder", index++), ch[i], ch[i], 3, 2, 1, kChannelsLast,
                                       /*bias=*/false);
    for (int j = 0; j < c.num_encoder_blocks[i]; ++j)
      level.blocks.push_back(TaesdBlock::load(w, layer("encoder", index++), ch[i], ch[i]));
    levels_.push_back(std::move(level));
  }
  conv_out_ = Conv2d::load(w, layer("encoder", index), ch.back(), c.latent_channels, 3, 1, 1,
                           {ImageLayout::nhwc, ImageLayout::nchw});
}

Tensor TaesdEncoder::forward(const Tensor& image) const {
  if (image.ndim() != 4 || image.dim(1) != config_.in_channels || image.dim(0) < 1 || image.dim(2) < 1 ||
      image.dim(3) < 1)
    throw InvalidArgument("TAESD encoder: image must be [B, " + std::to_string(config_.in_channels) + ", H, W], got " +
                          shape_to_string(image.shape()));
  // "scale image from [-1, 1] to [0, 1] to match TAESD convention": x.add(1).div(2).
  Tensor x(image.shape());
  for (int64_t j = 0; j < image.numel(); ++j) x[j] = (image[j] + 1.0f) / 2.0f;
  for (const Level& level : levels_) {
    x = level.conv(x);
    for (const TaesdBlock& block : level.blocks) x = block(std::move(x));
  }
  return conv_out_(x);
}

}  // namespace sdcpu
