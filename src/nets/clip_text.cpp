#include "nets/clip_text.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "core/error.h"
#include "kernels/activations.h"
#include "kernels/attention.h"
#include "kernels/tensor_ops.h"

namespace sdcpu {

ClipTextModel::ClipTextModel(const ClipTextConfig& config, const WeightStore& w)
    : config_(config), compute_(without_int8(w.compute_type())) {
  const int64_t d = config.hidden_size, ff = config.intermediate_size;
  const float eps = config.layer_norm_eps;
  token_embedding_ = w.get_table("text_model.embeddings.token_embedding.weight", {config.vocab_size, d});
  position_embedding_ = w.get("text_model.embeddings.position_embedding.weight", {config.max_position_embeddings, d});
  for (int i = 0; i < config.num_hidden_layers; ++i) {
    const std::string p = "text_model.encoder.layers." + std::to_string(i);
    layers_.push_back(EncoderLayer{
        LayerNorm::load(w, p + ".layer_norm1", d, eps),
        LayerNorm::load(w, p + ".layer_norm2", d, eps),
        Linear::load(w, p + ".self_attn.q_proj", d, d),
        Linear::load(w, p + ".self_attn.k_proj", d, d),
        Linear::load(w, p + ".self_attn.v_proj", d, d),
        Linear::load(w, p + ".self_attn.out_proj", d, d),
        Linear::load(w, p + ".mlp.fc1", d, ff),
        Linear::load(w, p + ".mlp.fc2", ff, d),
    });
  }
  final_layer_norm_ = LayerNorm::load(w, "text_model.final_layer_norm", d, eps);
  // CLIPTextModelWithProjection: nn.Linear(hidden_size, projection_dim, bias=False), outside text_model.
  if (config.with_projection)
    text_projection_ = Linear::load(w, "text_projection", d, config.projection_dim, /*bias=*/false);
}

Tensor ClipTextModel::forward(const std::vector<std::vector<int>>& input_ids, int clip_skip) const {
  if (clip_skip < 0 || clip_skip >= config_.num_hidden_layers)
    throw InvalidArgument("text encoder: clip_skip " + std::to_string(clip_skip) + " out of range");
  return final_layer_norm_(run_layers(input_ids, config_.num_hidden_layers - clip_skip, -1, nullptr));
}

ClipTextModel::HiddenStateAndPooled ClipTextModel::forward_penultimate(const std::vector<std::vector<int>>& input_ids,
                                                                       int clip_skip) const {
  // hidden_states[-(clip_skip + 2)] of N + 1 states (the embeddings, then each layer's output).
  const int keep_after = config_.num_hidden_layers - 1 - clip_skip;
  if (clip_skip < 0 || keep_after < 0)
    throw InvalidArgument("text encoder: clip_skip " + std::to_string(clip_skip) + " out of range");
  HiddenStateAndPooled out;
  if (!config_.with_projection) {
    out.hidden_state = run_layers(input_ids, keep_after, -1, nullptr);
    return out;
  }
  const Tensor last =
      final_layer_norm_(run_layers(input_ids, config_.num_hidden_layers, keep_after, &out.hidden_state));
  // CLIPTextTransformer: pooled_output = last_hidden_state[arange(batch), input_ids.argmax(-1)]; torch.argmax
  // returns the first of equal maxima.
  const int64_t batch = last.dim(0), seq = last.dim(1), d = last.dim(2);
  Tensor pooled({batch, d});
  for (int64_t b = 0; b < batch; ++b) {
    const auto& row = input_ids[b];
    const int64_t eos = std::max_element(row.begin(), row.end()) - row.begin();
    std::memcpy(pooled.data() + b * d, last.data() + (b * seq + eos) * d, sizeof(float) * d);
  }
  out.text_embeds = text_projection_(pooled);
  return out;
}

Tensor ClipTextModel::run_layers(const std::vector<std::vector<int>>& input_ids, int layers_to_run, int keep_after,
                                 Tensor* kept) const {
  if (input_ids.empty()) throw InvalidArgument("text encoder: empty batch");
  const int64_t batch = static_cast<int64_t>(input_ids.size()), seq = static_cast<int64_t>(input_ids[0].size());
  const int64_t d = config_.hidden_size;
  if (seq == 0 || seq > config_.max_position_embeddings)
    throw InvalidArgument("text encoder: sequence length " + std::to_string(seq) + " outside 1.." +
                          std::to_string(config_.max_position_embeddings));

  // CLIPTextEmbeddings: token embedding + position embedding.
  Tensor hidden({batch, seq, d});
  for (int64_t b = 0; b < batch; ++b) {
    if (static_cast<int64_t>(input_ids[b].size()) != seq) throw InvalidArgument("text encoder: ragged batch");
    for (int64_t t = 0; t < seq; ++t) {
      const int id = input_ids[b][t];
      if (id < 0 || id >= config_.vocab_size)
        throw InvalidArgument("text encoder: token id " + std::to_string(id) + " out of range");
      const float* tok = token_embedding_.data() + static_cast<int64_t>(id) * d;
      const float* pos = position_embedding_.data() + t * d;
      float* dst = hidden.data() + (b * seq + t) * d;
      for (int64_t i = 0; i < d; ++i) dst[i] = tok[i] + pos[i];
    }
  }

  // CLIPEncoderLayer, pre-norm: x + attn(ln1(x)), then x + mlp(ln2(x)); each sum added by the branch's last
  // linear layer into x itself (kernels/linear.h).
  for (int i = 0; i < layers_to_run; ++i) {
    if (i == keep_after) *kept = hidden.clone();  // the next layer writes into `hidden` in place
    const EncoderLayer& layer = layers_[i];
    Tensor h = layer.layer_norm1(hidden);
    Tensor attn = attention(layer.q_proj(h), layer.k_proj(h), layer.v_proj(h), config_.num_attention_heads,
                            /*causal=*/true, compute_);
    hidden = layer.out_proj(attn, std::move(hidden));

    h = layer.layer_norm2(hidden);
    Tensor mlp = layer.fc1(h);
    if (config_.hidden_act == "quick_gelu")
      quick_gelu_(mlp);
    else
      gelu_(mlp);
    hidden = layer.fc2(mlp, std::move(hidden));
  }
  if (keep_after == layers_to_run) *kept = hidden.clone();
  return hidden;
}

}  // namespace sdcpu
