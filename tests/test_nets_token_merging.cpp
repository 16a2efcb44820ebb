// Token merging (ToMe; nets/token_merging.h) against tomesd's own bipartite_soft_matching_random2d
// (tests/oracle/make_tome_goldens.py): the destinations torch.randint draws, merge(x) and unmerge(y).
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/torch_rng.h"
#include "formats/model_config.h"
#include "formats/weight_store.h"
#include "nets/token_merging.h"
#include "nets/unet.h"
#include "test_support.h"

namespace sdcpu {
namespace {

const char* const kCases[] = {"b2_8x8_r0.5", "b2_7x9_r0.3", "b1_8x8_norand_r0.5", "b2_6x6_sx3_r0.95_clipped",
                              "b4_16x16_r0.5"};

struct Case {
  const SafetensorsFile* file;
  int64_t h, w, r;
  int sx, sy, seed, draws;
  bool no_rand;
};

Case load_case(const std::string& name) {
  const SafetensorsFile& g = testing::repo_golden("tome/" + name + ".safetensors");
  const auto& m = g.metadata();
  return {&g,
          std::stoll(m.at("h")),
          std::stoll(m.at("w")),
          std::stoll(m.at("r")),
          std::stoi(m.at("sx")),
          std::stoi(m.at("sy")),
          std::stoi(m.at("seed")),
          std::stoi(m.at("draws")),
          m.at("no_rand") == "1"};
}

std::vector<int64_t> golden_destinations(const SafetensorsFile& g, const std::string& name) {
  std::vector<int64_t> out;
  for (float v : g.read_f32(name).to_vector()) out.push_back(static_cast<int64_t>(v));
  return out;
}

// The golden's tensor `base` of draw `draw`: "merged", "merged_2", ...
// [a; b] along the batch.
Tensor concat_rows(const Tensor& a, const Tensor& b) {
  Tensor out({a.dim(0) + b.dim(0), a.dim(1), a.dim(2)});
  std::copy_n(a.data(), a.numel(), out.data());
  std::copy_n(b.data(), b.numel(), out.data() + a.numel());
  return out;
}

std::string key(const char* base, int draw) {
  std::string name = base;
  if (draw > 0) name.append("_").append(std::to_string(draw + 1));
  return name;
}

// The draws themselves: torch.randint(sy * sx, (h / sy, w / sx, 1), generator) from manual_seed(seed), one per block.
TEST(TokenMerging, DestinationsAreTorchRandint) {
  for (const char* name : kCases) {
    SCOPED_TRACE(name);
    const Case c = load_case(name);
    if (c.no_rand) continue;
    TorchGenerator generator(static_cast<uint64_t>(c.seed));
    const int64_t cells = (c.h / c.sy) * (c.w / c.sx);
    for (int draw = 0; draw < c.draws; ++draw)
      EXPECT_EQ(generator.randint(int64_t{c.sx} * c.sy, cells), golden_destinations(*c.file, key("rand_idx", draw)));
  }
}

// The merge and unmerge of tomesd's plan, given its destinations.
TEST(TokenMerging, MergeAndUnmergeMatchTomesd) {
  for (const char* name : kCases) {
    SCOPED_TRACE(name);
    const Case c = load_case(name);
    const Tensor metric = c.file->read_f32("metric"), x = c.file->read_f32("x");
    for (int draw = 0; draw < c.draws; ++draw) {
      const TokenMerge tome(metric, c.w, c.h, c.sx, c.sy, c.r, golden_destinations(*c.file, key("rand_idx", draw)));
      EXPECT_TENSOR_NEAR(tome.merge(x), c.file->read_f32(key("merged", draw)), 1e-6);
      const Tensor y = c.file->read_f32(key("y", draw));
      EXPECT_TENSOR_NEAR(tome.unmerge(y), c.file->read_f32(key("unmerged", draw)), 0.0);
      // residual + unmerge(y), as the transformer block adds it
      Tensor sum = tome.unmerge(y);
      const Tensor& ref = sum;
      Tensor residual = x.clone();
      const Tensor fused = tome.unmerge_add(y, residual);
      for (int64_t i = 0; i < x.numel(); ++i) sum[i] += x[i];
      EXPECT_TENSOR_NEAR(fused, ref, 0.0);
    }
  }
}

// compute_merge's part: the level (downsample) test, r = int(N * ratio), the draw (or none for an odd batch).
TEST(TokenMerging, ContextPlansAsComputeMerge) {
  const double ratios[] = {0.5, 0.3, 0.5, 0.95, 0.5};
  for (size_t i = 0; i < std::size(kCases); ++i) {
    SCOPED_TRACE(kCases[i]);
    const Case c = load_case(kCases[i]);
    TokenMergeContext context{
        {ratios[i], 1, c.sx, c.sy}, c.h, c.w, {TorchGenerator(static_cast<uint64_t>(c.seed))}, {}};
    const Tensor metric = c.file->read_f32("metric"), x = c.file->read_f32("x");
    for (int draw = 0; draw < c.draws; ++draw)
      EXPECT_TENSOR_NEAR(context.plan(metric).merge(x), c.file->read_f32(key("merged", draw)), 1e-6);
  }
}

TEST(TokenMerging, OnlyBlocksUpToMaxDownsampleMerge) {
  const Case c = load_case("b2_8x8_r0.5");
  const Tensor metric = c.file->read_f32("metric");
  // The same tokens as the second level of a latent twice the size: downsample 2 > max_downsample 1.
  TokenMergeContext context{{0.5, 1, 2, 2}, 2 * c.h, 2 * c.w, {TorchGenerator(0)}, {}};
  EXPECT_FALSE(context.plan(metric).merges());
  context.options.max_downsample = 2;
  EXPECT_TRUE(context.plan(metric).merges());
  context.options.ratio = 0.0;
  EXPECT_FALSE(context.plan(metric).merges());
}

// sdcpu draws per request: each batch row merges as its request's rows would alone, whatever the rows' order.
TEST(TokenMerging, RequestsArePlannedIndependently) {
  const Case c = load_case("b4_16x16_r0.5");
  const Tensor metric = c.file->read_f32("metric"), x = c.file->read_f32("x");
  // Rows [uncond A, uncond B, cond A, cond B], as the pipeline lays out two requests.
  TokenMergeContext both{{0.5, 1, 2, 2}, c.h, c.w, {TorchGenerator(7), TorchGenerator(8)}, {0, 1, 0, 1}};
  const Tensor merged = both.plan(metric).merge(x);
  for (int request = 0; request < 2; ++request) {
    const auto rows = [&](const Tensor& t) {
      return concat_rows(t.slice0(request, request + 1), t.slice0(request + 2, request + 3));
    };
    TokenMergeContext alone{{0.5, 1, 2, 2}, c.h, c.w, {TorchGenerator(7 + request)}, {}};
    EXPECT_TENSOR_NEAR(rows(merged), alone.plan(rows(metric)).merge(rows(x)), 0.0);
  }
}

const UNet2DConditionModel& tiny_unet() {
  static const std::string dir = testing::fixture("tiny-sd/unet");
  static WeightStore weights = [] {
    WeightStore w("unet");
    w.add_all(std::make_shared<SafetensorsFile>(dir + "/diffusion_pytorch_model.safetensors"));
    return w;
  }();
  static const UNet2DConditionModel unet(parse_unet_config(testing::read_text(dir + "/config.json")), weights);
  return unet;
}

// tomesd.apply_patch(unet, ratio, max_downsample) on the tiny UNet, call after call from one generator: the merging
// blocks of level 0 (and the mid block's with max_downsample 2), and the odd batch that draws nothing.
TEST(TokenMerging, UNetMatchesTomesdApplyPatch) {
  for (const char* name : {"unet_r0.5_md1", "unet_r0.3_md2", "unet_r0.5_md1_batch1"}) {
    SCOPED_TRACE(name);
    const SafetensorsFile& g = testing::repo_golden(std::string("tome/") + name + ".safetensors");
    const auto& m = g.metadata();
    const Tensor sample = g.read_f32("sample"), states = g.read_f32("encoder_hidden_states");
    const TokenMergeContext tome{{std::stod(m.at("ratio")), std::stoi(m.at("max_downsample")), 2, 2},
                                 sample.dim(2),
                                 sample.dim(3),
                                 {TorchGenerator(std::stoull(m.at("seed")))},
                                 {}};
    for (int call = 1; call <= std::stoi(m.at("calls")); ++call)
      EXPECT_TENSOR_NEAR(tiny_unet().forward(sample, g.read_f32("timestep")[0], states, &tome),
                         g.read_f32("out_" + std::to_string(call)), 1e-4);
  }
}

// Ratio 0 is no token merging at all, in every kind of pass; a ratio above it changes shallow passes too.
TEST(TokenMerging, RatioZeroChangesNothing) {
  const SafetensorsFile& g = testing::repo_golden("tome/unet_r0.5_md1.safetensors");
  const Tensor sample = g.read_f32("sample"), states = g.read_f32("encoder_hidden_states");
  const float t = g.read_f32("timestep")[0];
  const UNet2DConditionModel& unet = tiny_unet();
  const UNet2DConditionModel::AddedConditions kNone{Tensor(), Tensor(), Tensor()};
  const TokenMergeContext off{{0.0, 1, 2, 2}, sample.dim(2), sample.dim(3), {TorchGenerator(0)}, {}};
  EXPECT_TENSOR_NEAR(unet.forward(sample, t, states, &off), unet.forward(sample, t, states), 0.0);
  UNetStepCache plain{unet.deep_cache_branches() - 1, Tensor()}, with_off{plain.branch, Tensor()};
  EXPECT_TENSOR_NEAR(unet.forward_and_cache(sample, t, states, with_off, kNone, &off),
                     unet.forward_and_cache(sample, t, states, plain), 0.0);
  const Tensor shallow = unet.forward_shallow(sample, t, states, plain);
  EXPECT_TENSOR_NEAR(unet.forward_shallow(sample, t, states, with_off, kNone, &off), shallow, 0.0);
  const TokenMergeContext on{{0.5, 1, 2, 2}, sample.dim(2), sample.dim(3), {TorchGenerator(0)}, {}};
  EXPECT_GT(testing::compare(unet.forward_shallow(sample, t, states, plain, kNone, &on), shallow).max_abs, 1e-3);
  const TokenMergeContext wrong_size{{0.5, 1, 2, 2}, 8, 8, {TorchGenerator(0)}, {}};
  EXPECT_THROW(unet.forward(sample, t, states, &wrong_size), InvalidArgument);
}

TEST(TokenMerging, RejectsBadInput) {
  const Tensor metric = Tensor::zeros({2, 64, 4});
  EXPECT_THROW(TokenMerge(metric, 9, 8, 2, 2, 8, std::vector<int64_t>(16, 0)), InvalidArgument);  // 72 != 64 tokens
  EXPECT_THROW(TokenMerge(metric, 8, 8, 2, 2, 8, std::vector<int64_t>(15, 0)), InvalidArgument);  // not per cell
  EXPECT_THROW(TokenMerge(metric, 8, 8, 2, 2, 8, std::vector<int64_t>(16, 4)), InvalidArgument);  // outside a cell
  EXPECT_THROW(TokenMerge(metric, 8, 8, 2, 2, 8, std::vector<int64_t>(16, 0), {0, 1}), InvalidArgument);  // 1 list
  const TokenMerge tome(Tensor::full({2, 64, 4}, 1.0f), 8, 8, 2, 2, 8, std::vector<int64_t>(16, 0));
  EXPECT_THROW(tome.merge(Tensor::zeros({2, 63, 4})), InvalidArgument);
  EXPECT_THROW(tome.unmerge(Tensor::zeros({2, 64, 4})), InvalidArgument);
  EXPECT_THROW((TokenMergeOptions{1.0, 1, 2, 2}.validate()), InvalidArgument);
  EXPECT_THROW((TokenMergeOptions{0.5, 0, 2, 2}.validate()), InvalidArgument);
  EXPECT_NO_THROW((TokenMergeOptions{0.5, 1, 2, 2}.validate()));
}

}  // namespace
}  // namespace sdcpu
