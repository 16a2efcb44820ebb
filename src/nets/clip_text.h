// CLIP text transformer (transformers.CLIPTextModel; Radford et al., "Learning Transferable Visual
// Models From Natural Language Supervision", 2021): token + position embeddings, pre-norm causal
// self-attention layers, final layer norm. Tensor names follow the checkpoint ("text_model.encoder...").
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

  const ClipTextConfig& config() const { return config_; }

 private:
  struct EncoderLayer {
    LayerNorm layer_norm1, layer_norm2;
    Linear q_proj, k_proj, v_proj, out_proj;
    Linear fc1, fc2;
  };

  ClipTextConfig config_;
  ComputeType compute_ = ComputeType::f32;  // of the attention products (the layers carry their own)
  Tensor token_embedding_;                  // [vocab, hidden]
  Tensor position_embedding_;               // [positions, hidden]
  std::vector<EncoderLayer> layers_;
  LayerNorm final_layer_norm_;
};

}  // namespace sdcpu
