// Kernel scratch buffers (kernels/scratch.h) inside and outside an activation arena pass: inside they are planned
// with the pass's tensors, outside they are the thread's reused slots, and a prepared convolution and linear layer
// give the same bits either way, on the plan's first (recorded) pass and on the replayed ones.
#include <gtest/gtest.h>

#include <cstring>

#include "core/activation_arena.h"
#include "kernels/conv2d.h"
#include "kernels/cpu_features.h"
#include "kernels/linear.h"
#include "kernels/scratch.h"
#include "random_tensor.h"

namespace sdcpu {
namespace {

using testing::random_tensor;

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && std::memcmp(a.data(), b.data(), a.numel() * sizeof(float)) == 0;
}

TEST(ScratchBuffer, OutsideAPassIsTheThreadsSlotInsideIsTheArenas) {
  void* slot = ScratchBuffer(ScratchSlot::conv_dst, 1 << 16).data();
  EXPECT_EQ(ScratchBuffer(ScratchSlot::conv_dst, 1000).data(), slot);  // reused, not reallocated
  ActivationArena arena;
  ActivationArena::Pass pass(&arena, "k");
  const ScratchBuffer a(ScratchSlot::conv_dst, 1 << 16), b(ScratchSlot::conv_dst, 1 << 16);
  EXPECT_TRUE(arena.contains(a.data()));
  EXPECT_TRUE(arena.contains(b.data()));
  EXPECT_NE(a.data(), b.data());  // two alive at once: two buffers
}

TEST(ScratchBuffer, PreparedLayersGiveTheSameBitsInAPass) {
  for (ComputeType compute : {ComputeType::f32, ComputeType::bf16}) {
    if (compute == ComputeType::bf16 && !cpu_has_native_bf16()) continue;
    SCOPED_TRACE(compute_type_name(compute));
    const PreparedConv2d conv(random_tensor({32, 16, 3, 3}, 1, 0.1f), random_tensor({32}, 2), 1, 1, compute);
    const PreparedLinear proj(random_tensor({48, 32}, 3, 0.1f), random_tensor({48}, 4), compute);
    const Tensor x = random_tensor({2, 16, 20, 20}, 5), residual = random_tensor({2, 32, 20, 20}, 6);
    const Tensor rows = random_tensor({2, 400, 32}, 7);
    const Tensor conv_expected = conv2d(x, conv, residual), linear_expected = linear(rows, proj);
    ActivationArena arena;
    for (int pass_index = 0; pass_index < 3; ++pass_index) {
      SCOPED_TRACE("pass " + std::to_string(pass_index));
      ActivationArena::Pass pass(&arena, "layers");
      EXPECT_TRUE(same_bits(pass.output(conv2d(x, conv, residual)), conv_expected));
      EXPECT_TRUE(same_bits(pass.output(linear(rows, proj)), linear_expected));
    }
    const ActivationArena::Stats s = arena.stats();
    EXPECT_GT(s.planned, 0u);
    EXPECT_EQ(s.unplanned + s.heap, 0u);
  }
}

}  // namespace
}  // namespace sdcpu
