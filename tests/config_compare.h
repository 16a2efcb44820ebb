// Field-by-field comparison of model configurations, for the model-file tests. Fields that a
// single-file checkpoint cannot know (they are not visible in tensor shapes) can be skipped by name.
#pragma once
#include <gtest/gtest.h>

#include <set>
#include <string>

#include "formats/model_config.h"

namespace sdcpu::testing {

#define SDCPU_EXPECT_FIELD(a, b, field, skip)             \
  do {                                                    \
    if (!(skip).count(#field)) {                          \
      EXPECT_EQ((a).field, (b).field) << "field " #field; \
    }                                                     \
  } while (0)

inline void expect_same_config(const UNetConfig& a, const UNetConfig& b, const std::set<std::string>& skip = {}) {
  SDCPU_EXPECT_FIELD(a, b, in_channels, skip);
  SDCPU_EXPECT_FIELD(a, b, out_channels, skip);
  SDCPU_EXPECT_FIELD(a, b, block_out_channels, skip);
  SDCPU_EXPECT_FIELD(a, b, down_block_types, skip);
  SDCPU_EXPECT_FIELD(a, b, up_block_types, skip);
  SDCPU_EXPECT_FIELD(a, b, mid_block_type, skip);
  SDCPU_EXPECT_FIELD(a, b, layers_per_block, skip);
  SDCPU_EXPECT_FIELD(a, b, cross_attention_dim, skip);
  SDCPU_EXPECT_FIELD(a, b, num_attention_heads, skip);
  SDCPU_EXPECT_FIELD(a, b, transformer_layers_per_block, skip);
  SDCPU_EXPECT_FIELD(a, b, norm_num_groups, skip);
  SDCPU_EXPECT_FIELD(a, b, norm_eps, skip);
  SDCPU_EXPECT_FIELD(a, b, use_linear_projection, skip);
  SDCPU_EXPECT_FIELD(a, b, flip_sin_to_cos, skip);
  SDCPU_EXPECT_FIELD(a, b, freq_shift, skip);
  SDCPU_EXPECT_FIELD(a, b, conv_in_kernel, skip);
  SDCPU_EXPECT_FIELD(a, b, conv_out_kernel, skip);
  SDCPU_EXPECT_FIELD(a, b, downsample_padding, skip);
  SDCPU_EXPECT_FIELD(a, b, sample_size, skip);
}

inline void expect_same_config(const VaeConfig& a, const VaeConfig& b, const std::set<std::string>& skip = {}) {
  SDCPU_EXPECT_FIELD(a, b, in_channels, skip);
  SDCPU_EXPECT_FIELD(a, b, out_channels, skip);
  SDCPU_EXPECT_FIELD(a, b, latent_channels, skip);
  SDCPU_EXPECT_FIELD(a, b, block_out_channels, skip);
  SDCPU_EXPECT_FIELD(a, b, layers_per_block, skip);
  SDCPU_EXPECT_FIELD(a, b, norm_num_groups, skip);
  SDCPU_EXPECT_FIELD(a, b, scaling_factor, skip);
  SDCPU_EXPECT_FIELD(a, b, shift_factor, skip);
  SDCPU_EXPECT_FIELD(a, b, sample_size, skip);
}

inline void expect_same_config(const ClipTextConfig& a, const ClipTextConfig& b,
                               const std::set<std::string>& skip = {}) {
  SDCPU_EXPECT_FIELD(a, b, vocab_size, skip);
  SDCPU_EXPECT_FIELD(a, b, hidden_size, skip);
  SDCPU_EXPECT_FIELD(a, b, intermediate_size, skip);
  SDCPU_EXPECT_FIELD(a, b, num_hidden_layers, skip);
  SDCPU_EXPECT_FIELD(a, b, num_attention_heads, skip);
  SDCPU_EXPECT_FIELD(a, b, max_position_embeddings, skip);
  SDCPU_EXPECT_FIELD(a, b, hidden_act, skip);
  SDCPU_EXPECT_FIELD(a, b, layer_norm_eps, skip);
  SDCPU_EXPECT_FIELD(a, b, bos_token_id, skip);
  SDCPU_EXPECT_FIELD(a, b, eos_token_id, skip);
  SDCPU_EXPECT_FIELD(a, b, pad_token_id, skip);
  SDCPU_EXPECT_FIELD(a, b, projection_dim, skip);
}

#undef SDCPU_EXPECT_FIELD

}  // namespace sdcpu::testing
