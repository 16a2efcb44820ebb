#include "nets/resnet_block.h"

#include "core/error.h"
#include "kernels/activations.h"
#include "kernels/tensor_ops.h"

namespace sdcpu {

ResnetBlock2D ResnetBlock2D::load(const WeightStore& w, const std::string& prefix, int64_t in_channels,
                                  int64_t out_channels, int groups, float eps, int64_t temb_channels,
                                  float output_scale_factor) {
  ResnetBlock2D r;
  r.norm1 = GroupNorm::load(w, prefix + ".norm1", in_channels, groups, eps);
  r.conv1 = Conv2d::load(w, prefix + ".conv1", in_channels, out_channels, 3);
  if (temb_channels > 0) r.time_emb_proj = Linear::load(w, prefix + ".time_emb_proj", temb_channels, out_channels);
  // diffusers: groups_out defaults to groups, so norm2 uses the same group count on out_channels.
  r.norm2 = GroupNorm::load(w, prefix + ".norm2", out_channels, groups, eps);
  r.conv2 = Conv2d::load(w, prefix + ".conv2", out_channels, out_channels, 3);
  // use_in_shortcut = in_channels != out_channels; with conv_shortcut=False it is a 1x1 conv, padding 0.
  if (in_channels != out_channels)
    r.conv_shortcut = Conv2d::load(w, prefix + ".conv_shortcut", in_channels, out_channels, 1, 1, 0);
  r.output_scale_factor = output_scale_factor;
  return r;
}

Tensor ResnetBlock2D::operator()(const Tensor& x, const Tensor& temb) const {
  // Each norm + SiLU writes its convolution's input directly (GroupNorm::as_conv_input).
  Tensor h = conv1(norm1.as_conv_input(x, /*silu=*/true));
  if (!time_emb_proj.empty()) {
    if (temb.empty()) throw InvalidArgument("ResnetBlock2D: the block needs a time embedding");
    Tensor t = temb.clone();  // the caller's embedding is shared by every block
    silu_(t);
    add_channel_bias_(h, time_emb_proj(t));  // [N, out] broadcast as temb[:, :, None, None]
  }
  // output = (input_tensor + hidden_states) / output_scale_factor, the sum added by conv2 (kernels/conv2d.h):
  // into the shortcut's fresh output in place, or into a copy of x. Dropout is the identity at inference.
  Tensor shortcut = conv_shortcut.empty() ? x : conv_shortcut(x);
  h = conv2(norm2.as_conv_input(h, /*silu=*/true), std::move(shortcut));
  if (output_scale_factor != 1.0f) scale_(h, 1.0f / output_scale_factor);
  return h;
}

}  // namespace sdcpu
