// CLIP text transformer (transformers.CLIPTextModel; Radford et al., "Learning Transferable Visual
// Models From Natural Language Supervision", 2021): token + position embeddings, pre-norm causal
// self-attention layers, final layer norm. Tensor names follow the checkpoint ("text_model.encoder...").
// With config.with_projection it is transformers.CLIPTextModelWithProjection (SDXL's second encoder, OpenCLIP
// ViT-bigG/14 in transformers names): the pooled output also goes through a bias-less text_projection.
#pragma once
#include <vector>

#include "core/tensor.h"
#include "formats/model_config.h"
#include "formats/weight_store.h"
#include "nets/layers.h"

namespace sdcpu {

class ClipTextModel {
 public:
  ClipTextModel(const ClipTextConfig& config, const WeightStore& weights);

  // input_ids: batch x sequence token ids (each row up to max_position_embeddings long).
  // Returns [batch, sequence, hidden]: last_hidden_state after final_layer_norm. With clip_skip = k > 0
  // the output of layer N - k is used instead (still through final_layer_norm), as diffusers'
  // StableDiffusionPipeline.encode_prompt does for its clip_skip argument.
  Tensor forward(const std::vector<std::vector<int>>& input_ids, int clip_skip = 0) const;

  // What StableDiffusionXLPipeline.encode_prompt reads from `text_encoder(ids, output_hidden_states=True)`.
  struct HiddenStateAndPooled {
    // hidden_states[-(clip_skip + 2)]: the output of layer N - 1 - clip_skip (the penultimate layer's for
    // clip_skip 0), [batch, sequence, hidden], NOT through final_layer_norm.
    Tensor hidden_state;
    // final_layer_norm(last_hidden_state) at each row's EOS token (the first argmax of its ids, as transformers
    // 4.30.2 finds it), then text_projection: text_embeds [batch, projection_dim]. Only with_projection models.
    Tensor text_embeds;
  };
  HiddenStateAndPooled forward_penultimate(const std::vector<std::vector<int>>& input_ids, int clip_skip = 0) const;

  const ClipTextConfig& config() const { return config_; }

 private:
  struct EncoderLayer {
    LayerNorm layer_norm1, layer_norm2;
    Linear q_proj, k_proj, v_proj, out_proj;
    Linear fc1, fc2;
  };

  ClipTextConfig config_;
  // Runs the first `layers` encoder layers on the embedded ids: [batch, sequence, hidden], no final norm.
  // `keep_after` >= 0 also returns a copy of the state after that many layers (hidden_states[keep_after]).
  Tensor run_layers(const std::vector<std::vector<int>>& input_ids, int layers, int keep_after, Tensor* kept) const;

  ComputeType compute_ = ComputeType::f32;  // of the attention products (the layers carry their own)
  Tensor token_embedding_;                  // [vocab, hidden]
  Tensor position_embedding_;               // [positions, hidden]
  std::vector<EncoderLayer> layers_;
  LayerNorm final_layer_norm_;
  Linear text_projection_;  // with_projection only
};

}  // namespace sdcpu
