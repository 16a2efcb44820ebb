#include "nets/token_merging.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>

#include "core/error.h"
#include "kernels/linear.h"

namespace sdcpu {
namespace {

// torch.argsort on a CPU tensor (torch 1.13, stable=False) is std::sort over (value, index) pairs that compares
// values only (ATen/native/cpu/SortingKernel.cpp, KeyValueCompAsc / KeyValueCompDesc); our std::sort is the same
// libstdc++ introsort, so even tied values come out in torch's order (checked against torch for 64 and 4096 ties).
template <typename T, typename Less>
std::vector<int32_t> torch_argsort(const std::vector<T>& values, Less less) {
  std::vector<std::pair<T, int32_t>> pairs(values.size());
  for (size_t i = 0; i < values.size(); ++i) pairs[i] = {values[i], static_cast<int32_t>(i)};
  std::sort(pairs.begin(), pairs.end(), [&](const auto& a, const auto& b) { return less(a.first, b.first); });
  std::vector<int32_t> order(values.size());
  for (size_t i = 0; i < pairs.size(); ++i) order[i] = pairs[i].second;
  return order;
}

// bipartite_soft_matching_random2d's token order "dst | src": a buffer of -1 at each cell's chosen token and 0
// elsewhere (the top left hsy * sy by wsx * sx of an h x w image; the rest stays 0), argsorted.
std::vector<int32_t> destinations_then_sources(const int64_t* choice, int64_t w, int64_t h, int sx, int sy) {
  const int64_t hsy = h / sy, wsx = w / sx;
  std::vector<int64_t> buffer(static_cast<size_t>(h * w), 0);
  for (int64_t i = 0; i < hsy; ++i)
    for (int64_t j = 0; j < wsx; ++j) {
      const int64_t k = choice[i * wsx + j];  // row-major inside the (sy, sx) cell: view(hsy, wsx, sy, sx)
      buffer[(i * sy + k / sx) * w + j * sx + k % sx] = -1;
    }
  return torch_argsort(buffer, [](int64_t a, int64_t b) { return a < b; });
}

// metric / metric.norm(dim=-1, keepdim=True) for `count` tokens of width c, gathered in `order`.
std::vector<float> normalized_rows(const float* metric, const int32_t* order, int64_t count, int64_t c) {
  std::vector<float> out(static_cast<size_t>(count * c));
  for (int64_t i = 0; i < count; ++i) {
    const float* src = metric + order[i] * c;
    double sum = 0;
    for (int64_t k = 0; k < c; ++k) sum += static_cast<double>(src[k]) * src[k];
    const float norm = static_cast<float>(std::sqrt(sum));
    for (int64_t k = 0; k < c; ++k) out[i * c + k] = src[k] / norm;
  }
  return out;
}

}  // namespace

void TokenMergeOptions::validate() const {
  if (!(ratio >= 0.0 && ratio < 1.0))
    throw InvalidArgument("token merging ratio must be at least 0 and below 1, got " + std::to_string(ratio));
  if (max_downsample < 1) throw InvalidArgument("token merging max_downsample must be at least 1");
  if (sx < 1 || sy < 1) throw InvalidArgument("token merging strides sx and sy must be at least 1");
}

TokenMerge::TokenMerge(const Tensor& metric, int64_t w, int64_t h, int sx, int sy, int64_t r,
                       const std::vector<int64_t>& destinations, const std::vector<int>& row_lists) {
  if (metric.ndim() != 3 || metric.dim(0) <= 0 || w <= 0 || h <= 0 || metric.dim(1) != w * h)
    throw InvalidArgument("token merging: metric must be [batch, " + std::to_string(h) + " * " + std::to_string(w) +
                          ", channels], got " + shape_to_string(metric.shape()));
  if (sx < 1 || sy < 1) throw InvalidArgument("token merging: sx and sy must be at least 1");
  batch_ = metric.dim(0);
  n_ = metric.dim(1);
  const int64_t c = metric.dim(2);
  const int64_t num_dst = (h / sy) * (w / sx);
  // tomesd returns do_nothing for r <= 0; an image smaller than one cell has no destinations to merge into.
  if (r <= 0 || num_dst == 0) return;
  const auto lists = static_cast<int64_t>(destinations.size()) / num_dst;
  if (lists == 0 || static_cast<int64_t>(destinations.size()) % num_dst != 0)
    throw InvalidArgument("token merging: " + std::to_string(destinations.size()) + " destination choices for " +
                          std::to_string(num_dst) + " cells");
  if (!row_lists.empty() && static_cast<int64_t>(row_lists.size()) != batch_)
    throw InvalidArgument("token merging: a destination list for each of the " + std::to_string(batch_) +
                          " rows is needed, got " + std::to_string(row_lists.size()));
  for (int list : row_lists)
    if (list < 0 || list >= lists) throw InvalidArgument("token merging: a row names a missing destination list");
  for (int64_t d : destinations)
    if (d < 0 || d >= int64_t{sx} * sy) throw InvalidArgument("token merging: a destination outside its cell");
  const int64_t num_src = n_ - num_dst;
  r_ = std::min(r, num_src);  // "Can't reduce more than the # tokens in src"
  rows_.resize(static_cast<size_t>(batch_));

  // Each destination list's token order "dst | src", made when a row first needs it.
  std::vector<std::vector<int32_t>> orders(static_cast<size_t>(lists));
  for (int64_t b = 0; b < batch_; ++b) {
    const int list = row_lists.empty() ? 0 : row_lists[b];
    std::vector<int32_t>& order = orders[list];
    if (order.empty()) order = destinations_then_sources(destinations.data() + list * num_dst, w, h, sx, sy);
    const int32_t* dst_tokens = order.data();
    const int32_t* src_tokens = order.data() + num_dst;
    const float* row_metric = metric.data() + b * n_ * c;
    const std::vector<float> a = normalized_rows(row_metric, src_tokens, num_src, c);
    const std::vector<float> d = normalized_rows(row_metric, dst_tokens, num_dst, c);

    // node_max, node_idx = (a @ b.T).max(dim=-1): each source's most similar destination (the first on ties). The
    // products go through oneDNN's matmul with the destinations packed as a weight (kernels/linear.h): measured at
    // 3072 x 1024 x 320 on 2 cores, 21-31 ms against 107 ms unpacked and ten times that as a loop of dot products.
    std::vector<float> node_max(static_cast<size_t>(num_src));
    std::vector<int32_t> node_idx(static_cast<size_t>(num_src));
    const PreparedLinear destinations_normed(Tensor::from_vector({num_dst, c}, d), Tensor());
    const Tensor scores = linear(Tensor::from_vector({num_src, c}, a), destinations_normed);  // [num_src, num_dst]
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < num_src; ++i) {
      const float* row = scores.data() + i * num_dst;
      int64_t best = 0;
      for (int64_t j = 1; j < num_dst; ++j)
        if (row[j] > row[best]) best = j;
      node_max[i] = row[best];
      node_idx[i] = static_cast<int32_t>(best);
    }
    // edge_idx = node_max.argsort(descending=True): NaN first, then the most similar.
    const std::vector<int32_t> edge =
        torch_argsort(node_max, [](float x, float y) { return (std::isnan(x) && !std::isnan(y)) || x > y; });

    RowPlan& plan = rows_[b];
    const int64_t unmerged = num_src - r_;
    plan.kept_tokens.resize(static_cast<size_t>(n_ - r_));
    for (int64_t k = 0; k < unmerged; ++k) plan.kept_tokens[k] = src_tokens[edge[r_ + k]];
    for (int64_t j = 0; j < num_dst; ++j) plan.kept_tokens[unmerged + j] = dst_tokens[j];
    plan.merged_tokens.resize(static_cast<size_t>(r_));
    plan.merged_into_rows.resize(static_cast<size_t>(r_));
    plan.sources_merged.assign(static_cast<size_t>(n_ - r_), 0);
    for (int64_t k = 0; k < r_; ++k) {
      plan.merged_tokens[k] = src_tokens[edge[k]];
      plan.merged_into_rows[k] = static_cast<int32_t>(unmerged + node_idx[edge[k]]);
      ++plan.sources_merged[plan.merged_into_rows[k]];
    }
  }
}

void TokenMerge::check_input(const Tensor& x, int64_t tokens, const char* what) const {
  if (x.ndim() != 3 || x.dim(0) != batch_ || x.dim(1) != tokens)
    throw InvalidArgument(std::string("token merging: ") + what + " must be [" + std::to_string(batch_) + ", " +
                          std::to_string(tokens) + ", channels], got " + shape_to_string(x.shape()));
}

Tensor TokenMerge::merge(const Tensor& x) const {
  if (!merges()) return x;
  check_input(x, n_, "merge input");
  const int64_t c = x.dim(2), kept = n_ - r_;
  Tensor out({batch_, kept, c});
  for (int64_t b = 0; b < batch_; ++b) {
    const RowPlan& plan = rows_[b];
    const float* xb = x.data() + b * n_ * c;
    float* ob = out.data() + b * kept * c;
    // Serial: a few MB of copies; parallel regions cost more than they save on a loaded machine (measured).
    for (int64_t k = 0; k < kept; ++k) std::copy_n(xb + plan.kept_tokens[k] * c, c, ob + k * c);
    // dst.scatter_reduce(-2, dst_idx, src, reduce="mean") (include_self): the destination plus its sources in
    // merge order, then divided by 1 + their number.
    for (int64_t k = 0; k < r_; ++k) {
      const float* src = xb + plan.merged_tokens[k] * c;
      float* dst = ob + plan.merged_into_rows[k] * c;
      for (int64_t i = 0; i < c; ++i) dst[i] += src[i];
    }
    for (int64_t k = 0; k < kept; ++k)
      if (plan.sources_merged[k] > 0) {
        const auto count = static_cast<float>(1 + plan.sources_merged[k]);
        for (int64_t i = 0; i < c; ++i) ob[k * c + i] /= count;
      }
  }
  return out;
}

Tensor TokenMerge::unmerge(const Tensor& y) const {
  if (!merges()) return y;
  check_input(y, n_ - r_, "unmerge input");
  return unmerge_add(y, Tensor::zeros({batch_, n_, y.dim(2)}));
}

Tensor TokenMerge::unmerge_add(const Tensor& y, Tensor residual) const {
  if (!merges()) {
    check_input(y, n_, "unmerge input");
    check_input(residual, n_, "residual");
    float* out = residual.data();
    const float* in = y.data();
    for (int64_t i = 0; i < residual.numel(); ++i) out[i] += in[i];
    return residual;
  }
  check_input(y, n_ - r_, "unmerge input");
  check_input(residual, n_, "residual");
  if (y.dim(2) != residual.dim(2)) throw InvalidArgument("token merging: unmerge and residual widths differ");
  const int64_t c = y.dim(2), kept = n_ - r_;
  for (int64_t b = 0; b < batch_; ++b) {
    const RowPlan& plan = rows_[b];
    const float* yb = y.data() + b * kept * c;
    float* xb = residual.data() + b * n_ * c;
    // Every token is written once: the kept ones from their own row, the merged-away ones from their destination's.
#pragma omp parallel for schedule(static)
    for (int64_t k = 0; k < kept; ++k) {
      float* dst = xb + plan.kept_tokens[k] * c;
      const float* src = yb + k * c;
      for (int64_t i = 0; i < c; ++i) dst[i] += src[i];
    }
#pragma omp parallel for schedule(static)
    for (int64_t k = 0; k < r_; ++k) {
      float* dst = xb + plan.merged_tokens[k] * c;
      const float* src = yb + plan.merged_into_rows[k] * c;
      for (int64_t i = 0; i < c; ++i) dst[i] += src[i];
    }
  }
  return residual;
}

TokenMerge TokenMergeContext::plan(const Tensor& tokens) const {
  if (!options.enabled()) return {};
  if (tokens.ndim() != 3 || tokens.dim(1) <= 0 || latent_h <= 0 || latent_w <= 0) return {};
  const int64_t n = tokens.dim(1);
  // compute_merge: downsample = int(math.ceil(math.sqrt(original_tokens // x.shape[1]))).
  const auto downsample = static_cast<int64_t>(std::ceil(std::sqrt(static_cast<double>(latent_h * latent_w / n))));
  if (downsample > options.max_downsample) return {};
  const int64_t w = (latent_w + downsample - 1) / downsample;  // int(math.ceil(original_w / downsample))
  const int64_t h = (latent_h + downsample - 1) / downsample;
  // tomesd assumes these are the tokens' image size; where rounding makes them not (odd sizes), do not merge.
  if (h * w != n) return {};
  const auto r = static_cast<int64_t>(static_cast<double>(n) * options.ratio);  // int(x.shape[1] * ratio)
  if (r <= 0) return {};
  const int64_t batch = tokens.dim(0);
  const auto lists = static_cast<int64_t>(generators.size());
  if (lists == 0 || (row_generator.empty() ? lists != 1 : static_cast<int64_t>(row_generator.size()) != batch))
    throw InvalidArgument("token merging: " + std::to_string(generators.size()) + " generators and " +
                          std::to_string(row_generator.size()) + " row assignments for a batch of " +
                          std::to_string(batch));
  std::vector<int64_t> rows(static_cast<size_t>(lists), 0);
  for (int64_t b = 0; b < batch; ++b) {
    const int list = row_generator.empty() ? 0 : row_generator[b];
    if (list < 0 || list >= lists) throw InvalidArgument("token merging: a row names a missing generator");
    ++rows[list];
  }
  const int64_t cells = (h / options.sy) * (w / options.sx);
  std::vector<int64_t> destinations;
  destinations.reserve(static_cast<size_t>(lists * cells));
  for (int64_t g = 0; g < lists; ++g) {
    // "If the batch size is odd, then it's not possible for prompted and unprompted images to be in the same
    // batch, which causes artifacts with use_rand, so force it to be off." A generator without rows draws nothing.
    if (rows[g] > 0 && rows[g] % 2 == 0) {
      TorchGenerator generator = generators[g];  // shares the state: the draw advances the context's generator
      const std::vector<int64_t> drawn = generator.randint(int64_t{options.sx} * options.sy, cells);
      destinations.insert(destinations.end(), drawn.begin(), drawn.end());
    } else {
      destinations.insert(destinations.end(), static_cast<size_t>(cells), 0);
    }
  }
  return TokenMerge(tokens, w, h, options.sx, options.sy, r, destinations, row_generator);
}

}  // namespace sdcpu
