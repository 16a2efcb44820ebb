#include "pipeline/prompt_conditioning.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"

namespace sdcpu {
namespace {

Tensor rows_of(const Tensor& t, int64_t begin, int64_t end) { return t.empty() ? t : t.slice0(begin, end); }

std::vector<std::vector<int>> token_ids(const ClipTokenizer& tokenizer, const ClipTextModel& encoder,
                                        const std::vector<std::string>& prompts) {
  // tokenizer(prompt, padding="max_length", max_length=tokenizer.model_max_length, truncation=True)
  std::vector<std::vector<int>> ids;
  for (const std::string& p : prompts) ids.push_back(tokenizer.encode(p, encoder.config().max_position_embeddings));
  return ids;
}

// torch.concat([a, b], dim=-1) of [N, L, Ca] and [N, L, Cb].
Tensor concat_last(const Tensor& a, const Tensor& b) {
  if (a.ndim() != 3 || b.ndim() != 3 || a.dim(0) != b.dim(0) || a.dim(1) != b.dim(1))
    throw ModelError("text encoders: states of " + shape_to_string(a.shape()) + " and " + shape_to_string(b.shape()) +
                     " cannot be concatenated");
  const int64_t rows = a.dim(0) * a.dim(1), ca = a.dim(2), cb = b.dim(2);
  Tensor out({a.dim(0), a.dim(1), ca + cb});
  for (int64_t r = 0; r < rows; ++r) {
    std::memcpy(out.data() + r * (ca + cb), a.data() + r * ca, sizeof(float) * ca);
    std::memcpy(out.data() + r * (ca + cb) + ca, b.data() + r * cb, sizeof(float) * cb);
  }
  return out;
}

Tensor zeros_like(const Tensor& t) { return Tensor::zeros(t.shape()); }

}  // namespace

PromptConditioningFamily conditioning_family_of(const ModelFiles& files) {
  PromptConditioningFamily f;
  if (!files.text_encoder_2) return f;
  f.name = "SDXL";
  f.two_encoders_penultimate = true;
  f.text_time = true;
  f.zeros_for_empty_negative = files.force_zeros_for_empty_prompt;
  return f;
}

PromptConditioning PromptConditioning::rows(int64_t begin, int64_t end) const {
  return {rows_of(encoder_hidden_states, begin, end), rows_of(text_embeds, begin, end), rows_of(time_ids, begin, end)};
}

PromptConditioning PromptConditioning::repeat_each(int n) const {
  if (n == 1) return *this;
  std::vector<PromptConditioning> parts;
  for (int64_t i = 0; i < encoder_hidden_states.dim(0); ++i)
    for (int k = 0; k < n; ++k) parts.push_back(rows(i, i + 1));
  return concat(parts);
}

PromptConditioning PromptConditioning::concat(const std::vector<PromptConditioning>& parts) {
  if (parts.size() == 1) return parts.front();
  std::vector<Tensor> states, text, ids;
  for (const PromptConditioning& p : parts) {
    states.push_back(p.encoder_hidden_states);
    if (!p.text_embeds.empty()) text.push_back(p.text_embeds);
    if (!p.time_ids.empty()) ids.push_back(p.time_ids);
  }
  PromptConditioning out;
  out.encoder_hidden_states = concat0(states);
  if (!text.empty()) out.text_embeds = concat0(text);
  if (!ids.empty()) out.time_ids = concat0(ids);
  return out;
}

PromptConditioning encode_prompt_conditioning(const PromptConditioningFamily& family, const TextEncoders& encoders,
                                              const std::vector<std::string>& prompts, int clip_skip, int height,
                                              int width) {
  PromptConditioning out;
  if (!family.two_encoders_penultimate) {
    out.encoder_hidden_states =
        encoders.text_encoder->forward(token_ids(*encoders.tokenizer, *encoders.text_encoder, prompts), clip_skip);
  } else {
    if (!encoders.tokenizer_2 || !encoders.text_encoder_2)
      throw ModelError(family.name + " needs a second text encoder and tokenizer");
    // for tokenizer, text_encoder in zip(tokenizers, text_encoders): ... hidden_states[-(clip_skip + 2)];
    // pooled_prompt_embeds = prompt_embeds[0], which the second encoder's text_embeds overwrite.
    const auto one = encoders.text_encoder->forward_penultimate(
        token_ids(*encoders.tokenizer, *encoders.text_encoder, prompts), clip_skip);
    const auto two = encoders.text_encoder_2->forward_penultimate(
        token_ids(*encoders.tokenizer_2, *encoders.text_encoder_2, prompts), clip_skip);
    out.encoder_hidden_states = concat_last(one.hidden_state, two.hidden_state);
    out.text_embeds = two.text_embeds;
  }
  if (family.text_time) {
    // _get_add_time_ids(original_size=(H, W), crops_coords_top_left=(0, 0), target_size=(H, W)), one row per prompt.
    const float row[6] = {static_cast<float>(height), static_cast<float>(width), 0.0f, 0.0f,
                          static_cast<float>(height), static_cast<float>(width)};
    out.time_ids = Tensor({static_cast<int64_t>(prompts.size()), 6});
    for (size_t i = 0; i < prompts.size(); ++i) std::copy(row, row + 6, out.time_ids.data() + i * 6);
  }
  return out;
}

PromptConditioning encode_guidance_conditioning(const PromptConditioningFamily& family, const TextEncoders& encoders,
                                                const std::string& negative_prompt, const std::string& prompt,
                                                bool guided, int clip_skip, int height, int width) {
  if (!guided) return encode_prompt_conditioning(family, encoders, {prompt}, clip_skip, height, width);
  if (!(family.zeros_for_empty_negative && negative_prompt.empty()))
    return encode_prompt_conditioning(family, encoders, {negative_prompt, prompt}, clip_skip, height, width);
  // zero_out_negative_prompt: negative_prompt_embeds = zeros_like(prompt_embeds), and so the pooled ones; the time
  // ids of the negative half are the same (negative_original_size etc. default to the prompt's).
  const PromptConditioning cond = encode_prompt_conditioning(family, encoders, {prompt}, clip_skip, height, width);
  PromptConditioning uncond{zeros_like(cond.encoder_hidden_states),
                            cond.text_embeds.empty() ? Tensor() : zeros_like(cond.text_embeds), cond.time_ids};
  return PromptConditioning::concat({uncond, cond});
}

}  // namespace sdcpu
