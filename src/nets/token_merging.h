// Token merging for Stable Diffusion (ToMe: Bolya and Hoffman, "Token Merging for Fast Stable Diffusion", CVPRW
// 2023), as github.com/dbolya/tomesd (commit 27a14a3) computes it: before a transformer block's self-attention the
// block's N image tokens are split into destinations (one per sx x sy cell) and sources (the rest); the r sources
// most similar to some destination (cosine similarity) are averaged into it, self-attention runs on the N - r
// tokens left, and each merged source then takes its destination's output back ("unmerge").
//
// TokenMerge is tomesd.merge.bipartite_soft_matching_random2d: the plan made from one block's tokens, then its
// merge and unmerge. TokenMergeContext is tomesd.patch.compute_merge: which blocks merge, how many tokens, and the
// random draw of destinations, per UNet pass.
#pragma once
#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "core/torch_rng.h"

namespace sdcpu {

// tomesd.apply_patch's arguments (merge_attn=True, merge_crossattn=False, merge_mlp=False, use_rand=True: only
// self-attention merges, as tomesd recommends and defaults to).
struct TokenMergeOptions {
  double ratio = 0.0;      // the fraction of a block's tokens merged away, r = int(N * ratio); 0 turns ToMe off
  int max_downsample = 1;  // merge in blocks whose tokens are at most this many times downsampled (1, 2, 4 or 8)
  int sx = 2, sy = 2;      // the destination cells' width and height, in tokens

  bool enabled() const { return ratio > 0.0; }
  // InvalidArgument unless 0 <= ratio < 1, max_downsample >= 1, sx, sy >= 1.
  void validate() const;
};

// One bipartite_soft_matching_random2d plan over a batch of image tokens [B, N = h * w, C]. Default-constructed,
// or with r <= 0, it merges nothing (merge returns its input; unmerge_add adds it).
class TokenMerge {
 public:
  TokenMerge() = default;
  // `metric` [B, h * w, C] is what similarity is measured on (tomesd: the block's input hidden states).
  // `destinations` holds, per cell (row-major over the (h / sy) x (w / sx) cells), which of its sy * sx tokens
  // (row-major inside the cell) is the destination: tomesd's rand_idx, zeros for no_rand. tomesd draws one such
  // list for the whole batch; sdcpu draws one per request of a batch (TokenMergeContext), so `destinations` may
  // hold several lists one after another, and `row_lists` says which list each batch row uses (empty: all rows
  // use the first). Tokens right of or below the last whole cell are sources.
  TokenMerge(const Tensor& metric, int64_t w, int64_t h, int sx, int sy, int64_t r,
             const std::vector<int64_t>& destinations, const std::vector<int>& row_lists = {});

  bool merges() const { return r_ > 0; }
  int64_t merged_tokens() const { return n_ - r_; }

  // merge(x, mode="mean"): [B, N, C'] -> [B, N - r, C'], the unmerged sources (most similar first) then the
  // destinations, each the mean of itself and the sources merged into it.
  Tensor merge(const Tensor& x) const;
  // unmerge(y): [B, N - r, C'] -> [B, N, C'], every token the row of y it was merged into.
  Tensor unmerge(const Tensor& y) const;
  // residual + unmerge(y), written into `residual` ([B, N, C']; its storage must not be shared) and returned:
  // ToMeBlock's "hidden_states = u_a(attn_output) + hidden_states" without the unmerged copy.
  Tensor unmerge_add(const Tensor& y, Tensor residual) const;

 private:
  // Per batch row, in merged order: the token each of the first N - r merged rows comes from (the unmerged
  // sources, then the destinations), and for each merged-away source its token and its destination's merged row.
  struct RowPlan {
    std::vector<int32_t> kept_tokens;       // N - r
    std::vector<int32_t> merged_tokens;     // r, most similar first
    std::vector<int32_t> merged_into_rows;  // r
    std::vector<int32_t> sources_merged;    // N - r: how many sources each merged row took in
  };
  void check_input(const Tensor& x, int64_t tokens, const char* what) const;

  int64_t batch_ = 0, n_ = 0, r_ = 0;
  std::vector<RowPlan> rows_;
};

// tomesd.patch.compute_merge for one UNet pass: the latent's size (the model's forward pre-hook), the options, and
// the generators destinations are drawn from. Each BasicTransformerBlock asks for its plan in the order blocks run.
struct TokenMergeContext {
  TokenMergeOptions options;
  int64_t latent_h = 0, latent_w = 0;
  // One generator per request of the batch, advanced by every merging block (copies share state,
  // core/torch_rng.h), and which of them each batch row draws from (empty: all rows from the first). A request's
  // rows (its unconditional and conditional rows, all its images) share one draw, as tomesd's whole batch does.
  std::vector<TorchGenerator> generators;
  std::vector<int> row_generator;

  // The plan for one block's input tokens [B, N, C]: no merging when the block is downsampled more than
  // max_downsample times (downsample = ceil(sqrt(latent_h * latent_w // N))), or r = int(N * ratio) is 0.
  // Destinations are drawn (torch.randint(sy * sx, (h / sy, w / sx, 1), generator)) only for a generator with an
  // even number of rows; otherwise tomesd turns use_rand off and takes each cell's top-left token.
  TokenMerge plan(const Tensor& tokens) const;
};

}  // namespace sdcpu
