// Microbenchmark of the fused attention kernel at the shapes Stable Diffusion 1.5 runs at 512x512 and SDXL at
// 1024x1024.
// Reports GFLOP/s counting the two products only, 4 * B * H * Lq * Lk * D; for the causal case that is the dense
// count (the kernel skips about half of it), so the figure reads as dense-equivalent throughput. Every shape runs
// with fp32 products and, as name_bf16, with bf16 ones (ComputeType::bf16; the same FLOP count).
//
//   build-*/bench_kernels_attention [--benchmark_filter=self] [--benchmark_filter=_bf16]
#include <benchmark/benchmark.h>
#include <time.h>

#include <random>
#include <string>

#include "kernels/attention.h"
#include "random_tensor.h"

namespace sdcpu {
namespace {

using testing::random_tensor;

double process_cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

// Args: batch, Lq, Lk, heads, head dim, causal, compute type (0 fp32, 1 bf16).
void BM_Attention(benchmark::State& state) {
  const int64_t b = state.range(0), lq = state.range(1), lk = state.range(2), h = state.range(3), d = state.range(4);
  const bool causal = state.range(5) != 0;
  const ComputeType type = state.range(6) != 0 ? ComputeType::bf16 : ComputeType::f32;
  const Tensor q = random_tensor({b, lq, h * d}, 1), k = random_tensor({b, lk, h * d}, 2),
               v = random_tensor({b, lk, h * d}, 3);
  const double cpu0 = process_cpu_seconds();
  for (auto _ : state) benchmark::DoNotOptimize(attention(q, k, v, static_cast<int>(h), causal, type));
  const double cpu = process_cpu_seconds() - cpu0;
  const double flop = 4.0 * static_cast<double>(b * h * lq * lk * d);
  state.counters["GFLOP/s"] = benchmark::Counter(flop * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  // Per busy core: the work over the CPU time of all threads (spin-waits included). On a machine shared with
  // other jobs the wall-clock rate above drops with the load; this one does not, and times the thread count
  // it is what the kernel reaches on idle cores.
  state.counters["GFLOP/s/core"] = flop * 1e-9 * static_cast<double>(state.iterations()) / cpu;
}

struct Shape {
  const char* name;
  int64_t batch, lq, lk, heads, d, causal;
};
const Shape kShapes[] = {
    // UNet self-attention at each level (batch 2 for guidance), 512x512 image = 64x64 latents.
    {"self_4096_h8_d40", 2, 4096, 4096, 8, 40, 0},
    {"self_1024_h8_d80", 2, 1024, 1024, 8, 80, 0},
    {"self_256_h8_d160", 2, 256, 256, 8, 160, 0},
    {"self_64_h8_d160", 2, 64, 64, 8, 160, 0},
    // UNet cross-attention against the 77 CLIP tokens.
    {"cross_4096_h8_d40", 2, 4096, 77, 8, 40, 0},
    {"cross_1024_h8_d80", 2, 1024, 77, 8, 80, 0},
    {"cross_256_h8_d160", 2, 256, 77, 8, 160, 0},
    {"cross_64_h8_d160", 2, 64, 77, 8, 160, 0},
    // VAE decoder mid-block: one head of 512 over the 64x64 latent pixels.
    {"vae_4096_h1_d512", 1, 4096, 4096, 1, 512, 0},
    // SDXL at 1024x1024 (128x128 latents): self-attention in heads of 64 at the 64x64 level (640 channels, 10
    // heads, 2 blocks per transformer) and the 32x32 level (1280 channels, 20 heads, 10 blocks); cross-attention
    // against 77 tokens of 2048; the VAE mid-block over the 128x128 latent pixels.
    {"sdxl_self_4096_h10_d64", 2, 4096, 4096, 10, 64, 0},
    {"sdxl_self_1024_h20_d64", 2, 1024, 1024, 20, 64, 0},
    {"sdxl_cross_4096_h10_d64", 2, 4096, 77, 10, 64, 0},
    {"sdxl_vae_16384_h1_d512", 1, 16384, 16384, 1, 512, 0},
    // CLIP text encoder: causal, 12 heads of 64 over 77 tokens (cond + uncond).
    {"clip_77_h12_d64_causal", 2, 77, 77, 12, 64, 1},
};

// Each shape in fp32 (its plain name) and bf16 (name_bf16, ComputeType::bf16), side by side.
const bool kRegistered = [] {
  for (const Shape& s : kShapes)
    for (const int bf16 : {0, 1})
      benchmark::RegisterBenchmark((std::string(s.name) + (bf16 ? "_bf16" : "")).c_str(), BM_Attention)
          ->Args({s.batch, s.lq, s.lk, s.heads, s.d, s.causal, bf16})
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime();
  return true;
}();

}  // namespace
}  // namespace sdcpu

BENCHMARK_MAIN();
