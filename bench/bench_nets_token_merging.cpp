// Microbenchmark of token merging (nets/token_merging.h) against what it saves, at SD 1.5's first UNet level at
// 512x512 with guidance: 2 rows of 4096 tokens x 320 channels, 8 heads. One merging block pays BM_TomeMatching
// (the plan: cosine similarities of 3072 sources to 1024 destinations, per row) plus merge and unmerge, and in
// exchange its self-attention runs at Lq = Lk = N - r (BM_SelfAttention/2048 for ratio 0.5) instead of 4096; its
// q/k/v/out projections shrink by the same factor (not measured here).
//
//   build/bench_nets_token_merging [--benchmark_filter=Attention]
#include <benchmark/benchmark.h>

#include <utility>
#include <vector>

#include "core/torch_rng.h"
#include "kernels/attention.h"
#include "nets/token_merging.h"
#include "random_tensor.h"

namespace sdcpu {
namespace {

using testing::random_tensor;

constexpr int64_t kRows = 2, kSide = 64, kChannels = 320;

// Arg: ratio in percent. Plan (with its draw), merge and unmerge_add, as BasicTransformerBlock does them.
void BM_TomeMatching(benchmark::State& state) {
  const Tensor x = random_tensor({kRows, kSide * kSide, kChannels}, 1);
  const Tensor normed = random_tensor({kRows, kSide * kSide, kChannels}, 2);
  const TokenMergeContext context{
      {static_cast<double>(state.range(0)) / 100.0, 1, 2, 2}, kSide, kSide, {TorchGenerator(0)}, {}};
  for (auto _ : state) {
    state.PauseTiming();
    Tensor residual = x.clone();  // the block adds into its own input
    state.ResumeTiming();
    const TokenMerge merge = context.plan(x);
    const Tensor merged = merge.merge(normed);
    benchmark::DoNotOptimize(merge.unmerge_add(merged, std::move(residual)));
  }
}
BENCHMARK(BM_TomeMatching)->Arg(50)->Unit(benchmark::kMillisecond)->UseRealTime();

// The plan alone (BM_TomeMatching less merge and unmerge).
void BM_TomePlan(benchmark::State& state) {
  const Tensor x = random_tensor({kRows, kSide * kSide, kChannels}, 1);
  const TokenMergeContext context{{0.5, 1, 2, 2}, kSide, kSide, {TorchGenerator(0)}, {}};
  for (auto _ : state) benchmark::DoNotOptimize(context.plan(x));
}
BENCHMARK(BM_TomePlan)->Unit(benchmark::kMillisecond)->UseRealTime();

// Arg: tokens. bf16 products, as sdcpu's bf16 UNet runs them.
void BM_SelfAttention(benchmark::State& state) {
  const int64_t n = state.range(0);
  const Tensor q = random_tensor({kRows, n, kChannels}, 3), k = random_tensor({kRows, n, kChannels}, 4),
               v = random_tensor({kRows, n, kChannels}, 5);
  for (auto _ : state) benchmark::DoNotOptimize(attention(q, k, v, 8, false, ComputeType::bf16));
}
BENCHMARK(BM_SelfAttention)->Arg(4096)->Arg(2048)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
}  // namespace sdcpu

BENCHMARK_MAIN();
