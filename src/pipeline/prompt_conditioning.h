// How a model family turns a request's prompts into what its UNet is conditioned on (DESIGN.md principle 8: a
// family is a description chosen at load, not a branch in the pipeline).
//
//   SD 1.x / 2.x, diffusers' StableDiffusionPipeline.encode_prompt: one CLIP text encoder; its last layer's output
//   (with clip_skip k, layer N - k's) through final_layer_norm is encoder_hidden_states. The unconditional half is
//   the encoded negative prompt ("" when there is none).
//   SDXL, StableDiffusionXLPipeline.encode_prompt: two encoders, each with its own tokenizer (tokenizer_2 pads with
//   "!"), the same prompt to both; hidden_states[-(clip_skip + 2)] of each (no final norm), concatenated on
//   channels, is encoder_hidden_states; the second encoder's text_embeds and the time ids original_size +
//   crops_coords_top_left + target_size = (H, W, 0, 0, H, W) (_get_add_time_ids with the pipeline's defaults) are
//   the UNet's added conditions. With force_zeros_for_empty_prompt and no negative prompt the unconditional
//   embeddings and text_embeds are zeros (sdcpu's empty negative prompt is diffusers' negative_prompt=None).
#pragma once
#include <string>
#include <vector>

#include "core/tensor.h"
#include "formats/model_files.h"
#include "nets/clip_text.h"
#include "text/clip_tokenizer.h"

namespace sdcpu {

struct PromptConditioningFamily {
  std::string name = "SD 1.x/2.x";  // or "SDXL"
  // Two text encoders whose penultimate states (hidden_states[-(clip_skip + 2)]) are concatenated, instead of
  // one encoder's final-normed state.
  bool two_encoders_penultimate = false;
  // The UNet's added conditions: text_embeds (the second encoder's pooled, projected output) and time ids.
  bool text_time = false;
  bool zeros_for_empty_negative = false;  // force_zeros_for_empty_prompt
};

// SDXL when the model has a second text encoder (ModelFiles::text_encoder_2), else SD 1.x/2.x.
PromptConditioningFamily conditioning_family_of(const ModelFiles& files);

// What the UNet is conditioned on, one row per image of its batch.
struct PromptConditioning {
  Tensor encoder_hidden_states;  // [N, tokens, cross_attention_dim]
  Tensor text_embeds;            // [N, P]; text_time families only, else empty
  Tensor time_ids;               // [N, 6]; text_time families only, else empty

  // Rows [begin, end) of each tensor (sharing storage).
  PromptConditioning rows(int64_t begin, int64_t end) const;
  // [r0, r1, ...] -> [r0 x n, r1 x n, ...] (prompt_embeds.repeat(1, n, 1).view(N * n, ...) in diffusers).
  PromptConditioning repeat_each(int n) const;
  // The parts' rows one after another.
  static PromptConditioning concat(const std::vector<PromptConditioning>& parts);
};

// The networks a family encodes with; tokenizer_2/text_encoder_2 only for two-encoder families.
struct TextEncoders {
  const ClipTokenizer* tokenizer = nullptr;
  const ClipTextModel* text_encoder = nullptr;
  const ClipTokenizer* tokenizer_2 = nullptr;
  const ClipTextModel* text_encoder_2 = nullptr;
};

// The conditioning of `prompts` (one row each) for images of height x width.
PromptConditioning encode_prompt_conditioning(const PromptConditioningFamily& family, const TextEncoders& encoders,
                                              const std::vector<std::string>& prompts, int clip_skip, int height,
                                              int width);

// With guidance, [uncond, cond] (the negative prompt's or, for zeros_for_empty_negative families with an empty
// negative prompt, zeros), else [cond].
PromptConditioning encode_guidance_conditioning(const PromptConditioningFamily& family, const TextEncoders& encoders,
                                                const std::string& negative_prompt, const std::string& prompt,
                                                bool guided, int clip_skip, int height, int width);

}  // namespace sdcpu
