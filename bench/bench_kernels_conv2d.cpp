// Microbenchmark of the 3x3 (and conv_in) convolutions of Stable Diffusion 1.5 at 512x512: the plain path
// (conv2d(x, weight, bias): nchw/oihw, oneDNN's gemm fallback) against PreparedConv2d (weights prepacked once
// into oneDNN's preferred blocked layout, activations reordered to it and back at the edges), and the residual
// add fused as a sum post-op against a separate add_. GFLOP/s counts 2 * Cin * Cout * kh * kw * Ho * Wo * N;
// the label is oneDNN's implementation name. Mode 4 is the prepared path in bf16 (bf16 weights and input, fp32
// accumulation and output). Modes 5 and 6 are what the networks run: channels-last images [N, H, W, C] in and
// out, no reorders (fp32, bf16). Modes 7 and 8 time a ResnetBlock2D's group norm + SiLU + conv on channels-last
// bf16: the norm writing the convolution's bf16 input itself (GroupNorm::as_conv_input, kernels/conv2d.h
// ConvSource) against group_norm to an fp32 tensor that the convolution's reorder then rounds to bf16.
//
//   build-*/bench_kernels_conv2d [--benchmark_filter=unet]
#include <benchmark/benchmark.h>

#include <random>

#include "kernels/conv2d.h"
#include "kernels/norms.h"
#include "kernels/tensor_ops.h"
#include "random_tensor.h"

namespace sdcpu {
namespace {

using testing::random_tensor;

enum Mode {
  kPlain = 0,
  kPrepared = 1,
  kPreparedThenAdd = 2,
  kPreparedFusedAdd = 3,
  kPreparedBf16 = 4,
  kNhwc = 5,
  kNhwcBf16 = 6,
  kNormIntoConvBf16 = 7,
  kNormThenConvBf16 = 8,
};

// Args: batch, Cin, Cout, H (= W), kernel, mode.
void BM_Conv2d(benchmark::State& state) {
  const int64_t n = state.range(0), c = state.range(1), o = state.range(2), h = state.range(3), k = state.range(4);
  const auto mode = static_cast<Mode>(state.range(5));
  const int pad = static_cast<int>(k / 2);
  const Tensor w = random_tensor({o, c, k, k}, 2), b = random_tensor({o}, 3);
  const Tensor residual = random_tensor({n, o, h, h}, 4);
  if (mode >= kNhwc) {
    const Tensor x = random_tensor({n, h, h, c}, 1), gamma = random_tensor({c}, 5), beta = random_tensor({c}, 6);
    const ComputeType compute = mode == kNhwc ? ComputeType::f32 : ComputeType::bf16;
    const PreparedConv2d conv(w, b, 1, pad, compute, kChannelsLast);
    const auto source = [&](void* out, ComputeType type) {
      group_norm_into(x, 32, gamma, beta, 1e-6f, true, out, type);
    };
    for (auto _ : state) {
      if (mode == kNormIntoConvBf16)
        benchmark::DoNotOptimize(conv2d(ConvSource{x.shape(), source}, conv));
      else if (mode == kNormThenConvBf16)
        benchmark::DoNotOptimize(conv2d(group_norm(x, 32, gamma, beta, 1e-6f, true), conv));
      else
        benchmark::DoNotOptimize(conv2d(x, conv));
    }
    state.SetLabel(conv.implementation(x.shape()));
  } else if (mode == kPlain) {
    const Tensor x = random_tensor({n, c, h, h}, 1);
    for (auto _ : state) benchmark::DoNotOptimize(conv2d(x, w, b, 1, pad));
    state.SetLabel("plain nchw/oihw");
  } else {
    const Tensor x = random_tensor({n, c, h, h}, 1);
    const PreparedConv2d conv(w, b, 1, pad, mode == kPreparedBf16 ? ComputeType::bf16 : ComputeType::f32);
    for (auto _ : state) {
      if (mode == kPrepared || mode == kPreparedBf16) {
        benchmark::DoNotOptimize(conv2d(x, conv));
      } else if (mode == kPreparedThenAdd) {
        Tensor y = conv2d(x, conv);
        add_(y, residual);
        benchmark::DoNotOptimize(y);
      } else {
        benchmark::DoNotOptimize(conv2d(x, conv, residual));
      }
    }
    state.SetLabel(conv.implementation(x.shape()));
  }
  const double flop = 2.0 * static_cast<double>(n * c * o * k * k * h * h);
  state.counters["GFLOP/s"] = benchmark::Counter(flop * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

void shapes(benchmark::internal::Benchmark* b, std::initializer_list<int64_t> modes) {
  b->ArgNames({"n", "cin", "cout", "hw", "k", "mode"});
  for (int64_t mode : modes) {
    // UNet, guidance batch 2: the 3x3 convs of the four levels (64, 32, 16, 8 latents) and conv_in.
    b->Args({2, 320, 320, 64, 3, mode});
    b->Args({2, 640, 640, 32, 3, mode});
    b->Args({2, 1280, 1280, 16, 3, mode});
    b->Args({2, 1280, 1280, 8, 3, mode});
    b->Args({2, 2560, 1280, 8, 3, mode});  // an up block's first resnet: the skip concatenated
    b->Args({2, 4, 320, 64, 3, mode});
    // VAE decoder, batch 1.
    b->Args({1, 512, 512, 64, 3, mode});
    b->Args({1, 512, 512, 128, 3, mode});
    b->Args({1, 256, 256, 256, 3, mode});
    b->Args({1, 128, 128, 512, 3, mode});
  }
}

BENCHMARK(BM_Conv2d)
    ->Name("conv")
    ->Apply([](benchmark::internal::Benchmark* b) {
      shapes(b, {kPlain, kPrepared, kPreparedBf16, kNhwc, kNhwcBf16});
    })
    ->Unit(benchmark::kMillisecond)
    ->MinTime(0.5)
    ->UseRealTime();  // oneDNN's OpenMP threads do the work: CPU time of the main thread would overstate GFLOP/s

// A ResnetBlock2D's norm + SiLU + conv, channels-last bf16: fused source against norm, then conv.
BENCHMARK(BM_Conv2d)
    ->Name("norm_conv")
    ->ArgNames({"n", "cin", "cout", "hw", "k", "mode"})
    ->Args({2, 320, 320, 64, 3, kNormIntoConvBf16})
    ->Args({2, 320, 320, 64, 3, kNormThenConvBf16})
    ->Args({1, 256, 256, 256, 3, kNormIntoConvBf16})
    ->Args({1, 256, 256, 256, 3, kNormThenConvBf16})
    ->Args({1, 128, 128, 512, 3, kNormIntoConvBf16})
    ->Args({1, 128, 128, 512, 3, kNormThenConvBf16})
    ->Unit(benchmark::kMillisecond)
    ->MinTime(0.5)
    ->UseRealTime();

// ResnetBlock2D's conv2 + skip: separate add_ against the sum post-op (UNet and VAE shapes only).
BENCHMARK(BM_Conv2d)
    ->Name("conv_residual")
    ->ArgNames({"n", "cin", "cout", "hw", "k", "mode"})
    ->Args({2, 320, 320, 64, 3, kPreparedThenAdd})
    ->Args({2, 320, 320, 64, 3, kPreparedFusedAdd})
    ->Args({1, 256, 256, 256, 3, kPreparedThenAdd})
    ->Args({1, 256, 256, 256, 3, kPreparedFusedAdd})
    ->Unit(benchmark::kMillisecond)
    ->MinTime(0.5)
    ->UseRealTime();  // oneDNN's OpenMP threads do the work: CPU time of the main thread would overstate GFLOP/s

}  // namespace
}  // namespace sdcpu

BENCHMARK_MAIN();
