// Microbenchmark of the UNet's timestep embedding (unet::timestep_embedding, diffusers' get_timestep_embedding):
// the sinusoidal features of one timestep for the guidance batch, computed once per denoising step. SD 1.5's
// width is 320; its TimestepEmbedding MLP after it is two prepacked linear layers (bench-free: oneDNN's).
//
//   build-*/bench_nets_timestep_embedding
#include <benchmark/benchmark.h>

#include "nets/unet_blocks.h"

namespace sdcpu {
namespace {

// Args: embedding width. Batch 2 (guidance), flip_sin_to_cos, freq_shift 0, as SD 1.x and 2.x configure it.
void BM_TimestepEmbedding(benchmark::State& state) {
  const int64_t dim = state.range(0);
  float t = 999.0f;
  for (auto _ : state) {
    benchmark::DoNotOptimize(unet::timestep_embedding(t, 2, dim, /*flip_sin_to_cos=*/true, /*freq_shift=*/0));
    t = t > 1.0f ? t - 1.0f : 999.0f;  // the timesteps a sampler walks through
  }
}

BENCHMARK(BM_TimestepEmbedding)->Arg(320)->Arg(1280)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace sdcpu

BENCHMARK_MAIN();
