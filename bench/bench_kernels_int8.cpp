// Microbenchmark of ComputeType::int8 against bf16 at Stable Diffusion 1.5's shapes (512x512, guided: batch 2):
// the UNet's 3x3 convolutions on channels-last images and its transformer blocks' linear layers, each timed whole
// as the networks call it, so the int8 figures include finding the input's scale (max_abs) and quantizing it
// (the reorder), which bf16's rounding reorder corresponds to. GOP/s counts 2 * multiply-adds; the label is
// oneDNN's implementation name (int8 runs brgconv / gemm on avx512_core_vnni).
//
//   build-*/bench_kernels_int8 [--benchmark_filter=Linear]
#include <benchmark/benchmark.h>

#include "kernels/conv2d.h"
#include "kernels/linear.h"
#include "random_tensor.h"

namespace sdcpu {
namespace {

using testing::random_tensor;

ComputeType compute_of(int64_t arg) { return arg == 1 ? ComputeType::int8 : ComputeType::bf16; }

// Args: batch, Cin, Cout, H (= W), int8 (0: bf16, 1: int8).
void BM_Conv3x3(benchmark::State& state) {
  const int64_t n = state.range(0), c = state.range(1), o = state.range(2), h = state.range(3);
  const Tensor w = random_tensor({o, c, 3, 3}, 2, 0.05f), b = random_tensor({o}, 3);
  const Tensor x = random_tensor({n, h, h, c}, 1);
  const PreparedConv2d conv(w, b, 1, 1, compute_of(state.range(4)), kChannelsLast);
  for (auto _ : state) benchmark::DoNotOptimize(conv2d(x, conv));
  state.SetLabel(std::string(compute_type_name(conv.compute_type())) + " " + conv.implementation(x.shape()));
  state.counters["GOP/s"] = benchmark::Counter(2.0 * n * c * o * 9 * h * h, benchmark::Counter::kIsIterationInvariantRate,
                                               benchmark::Counter::kIs1000);
}
BENCHMARK(BM_Conv3x3)
    ->ArgsProduct({{2}, {320}, {320}, {64}, {0, 1}})
    ->ArgsProduct({{2}, {640}, {640}, {32}, {0, 1}})
    ->ArgsProduct({{2}, {1280}, {1280}, {16}, {0, 1}})
    ->ArgsProduct({{2}, {2560}, {1280}, {16}, {0, 1}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// Args: rows, K, N, int8. The rows of level 0 (2 x 4096 tokens) and 1 (2 x 1024); q/k/v/out (K = N), the GEGLU
// projection (N = 8 K) and the feed-forward's output (K = 4 N).
void BM_Linear(benchmark::State& state) {
  const int64_t m = state.range(0), k = state.range(1), n = state.range(2);
  const Tensor w = random_tensor({n, k}, 2, 0.05f), b = random_tensor({n}, 3);
  const Tensor x = random_tensor({m, k}, 1);
  const PreparedLinear layer(w, b, compute_of(state.range(3)));
  for (auto _ : state) benchmark::DoNotOptimize(linear(x, layer));
  state.SetLabel(compute_type_name(layer.compute_type()));
  state.counters["GOP/s"] = benchmark::Counter(2.0 * m * k * n, benchmark::Counter::kIsIterationInvariantRate,
                                               benchmark::Counter::kIs1000);
}
BENCHMARK(BM_Linear)
    ->ArgsProduct({{8192}, {320}, {320}, {0, 1}})
    ->ArgsProduct({{8192}, {320}, {2560}, {0, 1}})
    ->ArgsProduct({{8192}, {1280}, {320}, {0, 1}})
    ->ArgsProduct({{2048}, {640}, {640}, {0, 1}})
    ->ArgsProduct({{2048}, {640}, {5120}, {0, 1}})
    ->ArgsProduct({{2048}, {2560}, {640}, {0, 1}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace
}  // namespace sdcpu

BENCHMARK_MAIN();
