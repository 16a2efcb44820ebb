// TorchGenerator reproduces torch.Generator("cpu").manual_seed(seed) and torch.randn(shape, generator=g)
// bit for bit, so a seed gives exactly the starting noise diffusers gives on CPU (DESIGN.md principle 5).
// Ancestral samplers keep drawing from the same generator after the initial latents, as diffusers does.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "core/tensor.h"

namespace sdcpu {

class TorchGenerator {
 public:
  explicit TorchGenerator(uint64_t seed);
  // torch.randn(shape, generator=this), float32.
  Tensor randn(const Shape& shape);
  // torch.randint(high, size=(count,), generator=this) as int64, 0 < high < 2^32: random_from_to_kernel draws one
  // 32-bit engine output per element, in order, and keeps it modulo high (uniform_int_from_to).
  std::vector<int64_t> randint(int64_t high, int64_t count);

 private:
  // The mt19937 engine and the cached second Box-Muller sample of the scalar path, as in PyTorch's
  // CPUGeneratorImpl. Copies of a TorchGenerator share one state, like references to a torch.Generator.
  struct State;
  std::shared_ptr<State> state_;
};

}  // namespace sdcpu
