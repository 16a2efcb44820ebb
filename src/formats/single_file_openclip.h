// The OpenCLIP ViT-H/14 text encoder of SD 2.x single files (cond_stage_model.model.*) as the transformers
// CLIPTextModel diffusers 0.27.2 turns it into (loaders/single_file_utils.py,
// create_text_encoder_from_open_clip_checkpoint with DIFFUSERS_TO_LDM_MAPPING["openclip"]):
//
//   token_embedding.weight                      -> text_model.embeddings.token_embedding.weight
//   positional_embedding                        -> text_model.embeddings.position_embedding.weight
//   ln_final.{weight,bias}                      -> text_model.final_layer_norm.*
//   transformer.resblocks.N.attn.in_proj_weight -> text_model.encoder.layers.N.self_attn.{q,k,v}_proj.weight
//                                                  (rows [0,W), [W,2W), [2W,3W) of the fused [3W, W] tensor)
//   transformer.resblocks.N.attn.in_proj_bias   -> ...self_attn.{q,k,v}_proj.bias (the same thirds)
//   transformer.resblocks.N.attn.out_proj.*     -> ...self_attn.out_proj.*
//   transformer.resblocks.N.ln_1.* / ln_2.*     -> ...layer_norm1.* / layer_norm2.*
//   transformer.resblocks.N.mlp.c_fc.* / c_proj.* -> ...mlp.fc1.* / mlp.fc2.*
//
// SD 2.x conditions on the penultimate layer: diffusers' text encoder config has one layer fewer than the
// checkpoint (23 of ViT-H's 24) and never loads the last resblock, so neither does this mapping. text_projection
// and logit_scale belong to CLIP's contrastive head, which CLIPTextModel does not have: both are ignored.
//
// SDXL's second encoder (conditioner.embedders.1.model.*, OpenCLIP ViT-bigG/14) becomes a
// CLIPTextModelWithProjection with every resblock (diffusers ignores only SD 2.x's cond_stage_model keys), and
//   text_projection [W, P]                      -> text_projection.weight [P, W] (checkpoint[...].T)
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "formats/single_file_keys.h"

namespace sdcpu {

// What the mapping needs to know about the whole text encoder before mapping one key.
struct OpenClipShape {
  int64_t width = 0;       // the hidden size W: token_embedding's second dimension
  int layers_in_file = 0;  // resblocks 0 .. layers_in_file-1
  bool sdxl = false;       // SDXL's encoder: every resblock kept, text_projection mapped; SD 2.x: the last dropped
  Shape projection;        // SDXL: text_projection's shape [W, P] in the file
};

// Scans the encoder's tensors (`tensors` has `prefix` removed). Throws ModelError when there is no
// token_embedding.weight, no transformer.resblocks, a resblock index is missing in between, fewer than two
// resblocks are present for SD 2.x (one would leave none after dropping the last), or for SDXL there is no
// text_projection of shape [W, P] (diffusers splits q/k/v at its first dimension).
OpenClipShape open_clip_shape(const std::vector<NamedShape>& tensors, const std::string& prefix = "cond_stage_model.model.",
                              bool sdxl = false);

// The transformers weights of one tensor `t` (its name without the prefix): none when it belongs to no weight
// (SD 2.x's last resblock and text_projection, logit_scale, attn_mask, ...), three for a fused in_proj. `source` is the
// full file name. Throws ModelError when an in_proj tensor does not have the shape [3W, W] / [3W].
std::vector<MappedTensor> map_open_clip_key(const NamedShape& t, const std::string& source, const OpenClipShape& clip);

}  // namespace sdcpu
