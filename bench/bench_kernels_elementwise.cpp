// Microbenchmark of the elementwise kernels (group norm with and without the fused SiLU, layer norm, GEGLU, the
// pointwise activations) at the shapes Stable Diffusion 1.5 runs at 512x512 (UNet batch 2 for guidance, VAE
// decoder batch 1). These kernels are memory-bound, so the figure is GB/s of the bytes each must move at least:
// its input read once and its output written once (a kernel that reads its input twice, as a two-pass norm
// does, is charged for one read only).
//
//   build-*/bench_kernels_elementwise [--benchmark_filter=group_norm] [--benchmark_min_time=0.2]
#include <benchmark/benchmark.h>
#include <time.h>

#include <algorithm>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "kernels/activations.h"
#include "kernels/norms.h"
#include "kernels/tensor_ops.h"
#include "kernels/upsample.h"

namespace sdcpu {
namespace {

Tensor random_tensor(Shape shape, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  Tensor t(std::move(shape));
  // Filling hundreds of MB from mt19937 takes longer than the benchmark: draw a 64 Ki-value block and tile it.
  constexpr int64_t kBlock = 1 << 16;
  for (int64_t i = 0; i < std::min<int64_t>(t.numel(), kBlock); ++i) t[i] = dist(gen);
  for (int64_t i = kBlock; i < t.numel(); ++i) t[i] = t[i - kBlock];
  return t;
}

double process_cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

// GB/s over wall-clock time, and per busy core over the CPU time of all threads (spin-waits included): on a
// machine shared with other jobs the first drops with the load; the second does not, and times the thread count
// it is what the kernel reaches on idle cores.
void set_counters(benchmark::State& state, double bytes, double cpu_seconds) {
  state.counters["GB/s"] = benchmark::Counter(bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GB/s/core"] = bytes * 1e-9 * static_cast<double>(state.iterations()) / cpu_seconds;
}

// warm_up: each benchmark runs its kernel once before timing. The first output of a size is fresh memory the
// kernel page-faults in (tens of ms for the VAE's 128-256 MB tensors, more than the kernel itself); the pipeline
// runs every shape many times and tcmalloc hands the same span back, so the steady state is what counts.

// Args: N, C, H, W, fused SiLU. 32 groups, as every SD 1.5 GroupNorm; the image is channels-last [N, H, W, C],
// as the networks hold it.
void BM_GroupNorm(benchmark::State& state) {
  const Tensor x = random_tensor({state.range(0), state.range(2), state.range(3), state.range(1)}, 1);
  const Tensor gamma = random_tensor({state.range(1)}, 2), beta = random_tensor({state.range(1)}, 3);
  const bool silu = state.range(4) != 0;
  benchmark::DoNotOptimize(group_norm(x, 32, gamma, beta, 1e-5f, silu));  // see warm_up
  const double cpu0 = process_cpu_seconds();
  for (auto _ : state) benchmark::DoNotOptimize(group_norm(x, 32, gamma, beta, 1e-5f, silu));
  set_counters(state, 2.0 * 4.0 * static_cast<double>(x.numel()), process_cpu_seconds() - cpu0);
}

// Args: rows, C.
void BM_LayerNorm(benchmark::State& state) {
  const Tensor x = random_tensor({state.range(0), state.range(1)}, 1);
  const Tensor gamma = random_tensor({state.range(1)}, 2), beta = random_tensor({state.range(1)}, 3);
  benchmark::DoNotOptimize(layer_norm(x, gamma, beta, 1e-5f));  // see warm_up
  const double cpu0 = process_cpu_seconds();
  for (auto _ : state) benchmark::DoNotOptimize(layer_norm(x, gamma, beta, 1e-5f));
  set_counters(state, 2.0 * 4.0 * static_cast<double>(x.numel()), process_cpu_seconds() - cpu0);
}

// Args: rows, D (the input is [rows, 2D], the output [rows, D]).
void BM_Geglu(benchmark::State& state) {
  const Tensor x = random_tensor({state.range(0), 2 * state.range(1)}, 1);
  benchmark::DoNotOptimize(geglu(x));  // see warm_up
  const double cpu0 = process_cpu_seconds();
  for (auto _ : state) benchmark::DoNotOptimize(geglu(x));
  set_counters(state, 1.5 * 4.0 * static_cast<double>(x.numel()), process_cpu_seconds() - cpu0);
}

// Args: element count, which activation (0 silu_, 1 gelu_, 2 quick_gelu_). In place: read and written once.
void BM_Activation(benchmark::State& state) {
  Tensor x = random_tensor({state.range(0)}, 1);
  const int which = static_cast<int>(state.range(1));
  const double cpu0 = process_cpu_seconds();
  for (auto _ : state) {
    if (which == 0) silu_(x);
    if (which == 1) gelu_(x);
    if (which == 2) quick_gelu_(x);
    // Each activation maps x to a value no larger in magnitude: repeated, x stays bounded and finite.
    benchmark::ClobberMemory();
  }
  set_counters(state, 2.0 * 4.0 * static_cast<double>(x.numel()), process_cpu_seconds() - cpu0);
}

// Args: N, C, H, W, which op: 0 add_ (a += b), 1 add_channel_bias_, 2 concat_channels of two channels-last
// [N, H, W, C], 3 upsample_nearest_2x. Bytes: every operand read once, the result written once.
void BM_TensorOp(benchmark::State& state) {
  const int64_t n = state.range(0), c = state.range(1), h = state.range(2), w = state.range(3);
  const int which = static_cast<int>(state.range(4));
  Tensor a = random_tensor({n, h, w, c}, 1);
  const Tensor b = random_tensor({n, h, w, c}, 2), bias = random_tensor({n, c}, 3);
  auto run = [&] {
    if (which == 0) add_(a, b);
    if (which == 1) add_channel_bias_(a, bias);
    if (which == 2) benchmark::DoNotOptimize(concat_channels(a, b));
    if (which == 3) benchmark::DoNotOptimize(upsample_nearest_2x(a));
    benchmark::ClobberMemory();
  };
  run();  // see warm_up
  const double cpu0 = process_cpu_seconds();
  for (auto _ : state) run();
  const double elems = static_cast<double>(a.numel()), bytes_per[] = {12, 8, 16, 20};
  set_counters(state, bytes_per[which] * elems, process_cpu_seconds() - cpu0);
}

const bool kRegistered = [] {
  auto reg = [](const std::string& name, auto fn, std::vector<int64_t> args) {
    benchmark::RegisterBenchmark(name.c_str(), fn)->Args(args)->Unit(benchmark::kMillisecond)->UseRealTime();
  };
  // UNet ResnetBlock2D norms at each level (64x64 latents), and the VAE decoder's largest levels.
  struct Gn {
    const char* name;
    int64_t n, c, h, w;
  };
  for (const Gn& s : {Gn{"unet_2x320x64x64", 2, 320, 64, 64}, Gn{"unet_2x640x32x32", 2, 640, 32, 32},
                      Gn{"unet_2x1280x16x16", 2, 1280, 16, 16}, Gn{"unet_2x1280x8x8", 2, 1280, 8, 8},
                      Gn{"vae_1x512x128x128", 1, 512, 128, 128}, Gn{"vae_1x256x512x512", 1, 256, 512, 512},
                      Gn{"vae_1x128x512x512", 1, 128, 512, 512}})
    for (const int silu : {1, 0})
      reg(std::string("group_norm") + (silu ? "_silu/" : "/") + s.name, BM_GroupNorm, {s.n, s.c, s.h, s.w, silu});
  // BasicTransformerBlock norms (2 x L tokens of C), and CLIP's (2 x 77 tokens of 768).
  for (const auto& [rows, c] :
       {std::pair<int64_t, int64_t>{2 * 4096, 320}, {2 * 1024, 640}, {2 * 256, 1280}, {2 * 64, 1280}, {2 * 77, 768}})
    reg("layer_norm/" + std::to_string(rows) + "x" + std::to_string(c), BM_LayerNorm, {rows, c});
  // FeedForward's GEGLU: [2, L, 8C] -> [2, L, 4C].
  for (const auto& [rows, d] : {std::pair<int64_t, int64_t>{2 * 4096, 1280}, {2 * 1024, 2560}, {2 * 256, 5120}})
    reg("geglu/" + std::to_string(rows) + "x" + std::to_string(2 * d), BM_Geglu, {rows, d});
  // The UNet's time-embedding SiLU is tiny; these are the sizes of a UNet conv output and of CLIP's MLP.
  reg("silu/2x320x64x64", BM_Activation, {2 * 320 * 64 * 64, 0});
  reg("gelu/2x77x3072", BM_Activation, {2 * 77 * 3072, 1});
  reg("quick_gelu/2x77x3072", BM_Activation, {2 * 77 * 3072, 2});
  // The glue around the UNet's blocks: residual adds, the time-embedding bias, the up blocks' skip
  // concatenations, the upsamplers' nearest 2x (the networks write it straight into the next convolution's input,
  // kernels/upsample.h upsample_nearest_into; this is the fp32 form).
  const char* ops[] = {"add_", "add_channel_bias_", "concat_channels", "upsample_nearest_2x"};
  for (int op = 0; op < 4; ++op)
    for (const auto& [c, hw] : {std::pair<int64_t, int64_t>{320, 64}, {640, 32}, {1280, 16}})
      reg(std::string(ops[op]) + "/2x" + std::to_string(c) + "x" + std::to_string(hw) + "x" + std::to_string(hw),
          BM_TensorOp, {2, c, hw, hw, op});
  return true;
}();

}  // namespace
}  // namespace sdcpu

BENCHMARK_MAIN();
