// Which UNet calls of a denoising loop run in full under step caching (DeepCache, Ma et al. 2023; nets/unet.h
// UNetStepCache), and which only run the shallow layers. Two schedules, as the DeepCache authors' code has them:
//
//   uniform    calls 0, N, 2N, ... (DeepCacheSDHelper's skip_mode "uniform"; DeepCache's pipeline `uniform=True`)
//   quadratic  ceil(calls / N) full calls placed by sample_from_quad_center(calls, ceil(calls / N), center, power):
//              denser around `center`, sparser towards both ends (the paper's non-uniform 1:N strategy; DeepCache's
//              pipeline `uniform=False`, `center`, `pow`)
#pragma once
#include <string>
#include <vector>

namespace sdcpu {

struct StepCacheSchedule {
  int interval = 1;              // N; 1: every call in full (off)
  std::string kind = "uniform";  // "uniform" | "quadratic"
  int center = -1;               // quadratic: where the full calls are densest; -1: calls / 2
  double power = 1.4;            // quadratic: the search's starting power (> 1)
};

// Throws InvalidArgument naming the field (cache_interval, cache_schedule, cache_center, cache_power) for settings
// no loop can use; the quadratic schedule's search may still fail for a given number of calls (full_unet_passes).
void validate(const StepCacheSchedule& schedule);

// For a loop of `calls` UNet calls, whether each runs in full. InvalidArgument (field cache_schedule) when the
// quadratic search finds no power for these calls, as DeepCache's ValueError.
std::vector<bool> full_unet_passes(const StepCacheSchedule& schedule, int calls);

// DeepCache's sample_from_quad_center(total_numbers, n_samples, center, pow)
// (DeepCache/sd/pipeline_stable_diffusion.py): the power actually used goes to `power_used`. Throws InvalidArgument
// when the search ends at a power <= 1 ("Cannot find suitable pow").
std::vector<int> sample_from_quad_center(int total, int samples, int center, double power, double* power_used);

}  // namespace sdcpu
