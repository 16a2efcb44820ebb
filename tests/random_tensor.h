// Normally distributed test inputs, reproducible from a seed: shared by the tests and the microbenchmarks.
#pragma once
#include <cstdint>
#include <random>
#include <utility>

#include "core/tensor.h"

namespace sdcpu::testing {

// Each value ~ N(0, scale^2), drawn in order from std::mt19937(seed).
inline Tensor random_tensor(Shape shape, uint32_t seed, float scale = 1.0f) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  Tensor t(std::move(shape));
  for (int64_t i = 0; i < t.numel(); ++i) t[i] = dist(gen);
  return t;
}

}  // namespace sdcpu::testing
