// The activation arena (core/activation_arena.h): greedy-by-size placement never overlaps buffers that are alive
// together; a pass replays its recorded plan with no allocation from anywhere else; and a pass that breaks its
// plan (a tensor kept longer, other sizes, another thread, an exception) still gets memory nothing else uses.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <stdexcept>
#include <thread>
#include <vector>

#include "core/activation_arena.h"
#include "core/tensor.h"

namespace sdcpu {
namespace {

struct Interval {
  size_t size;
  uint64_t born, died;
};

std::vector<size_t> plan(const std::vector<Interval>& buffers, size_t* total) {
  std::vector<size_t> sizes, offsets(buffers.size());
  std::vector<uint64_t> born, died;
  for (const Interval& b : buffers) {
    sizes.push_back(b.size);
    born.push_back(b.born);
    died.push_back(b.died);
  }
  *total = plan_activation_offsets(sizes.data(), born.data(), died.data(), buffers.size(), offsets.data());
  return offsets;
}

TEST(ActivationPlan, BuffersAliveTogetherNeverOverlapAndDeadOnesAreReused) {
  // A chain like a network's: each layer reads the previous output and writes a new one, then the input dies.
  //   a = [0, 2), b = [1, 4), c = [3, 6), d = [5, 7)
  size_t total = 0;
  const std::vector<size_t> off = plan({{640, 0, 2}, {1280, 1, 4}, {640, 3, 6}, {128, 5, 7}}, &total);
  EXPECT_EQ(total, 640u + 1280u);  // the most bytes alive at once (a with b, or b with c)
  EXPECT_TRUE(off[0] + 640 <= off[1] || off[1] + 1280 <= off[0]);
  EXPECT_TRUE(off[2] + 640 <= off[1] || off[1] + 1280 <= off[2]);
  EXPECT_EQ(off[0], off[2]);  // c takes a's place once a is dead
}

TEST(ActivationPlan, RandomLifetimesNeverOverlap) {
  std::mt19937 rng(3);
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<Interval> buffers;
    for (uint64_t t = 0; t < 300; ++t) {
      const uint64_t life = 1 + rng() % 40;
      buffers.push_back({64 * (1 + rng() % 1000), t, t + life});
    }
    size_t total = 0;
    const std::vector<size_t> off = plan(buffers, &total);
    size_t most_alive = 0;  // a lower bound no placement can beat
    for (uint64_t t = 0; t < 340; ++t) {
      size_t alive = 0;
      for (const Interval& b : buffers) alive += (b.born <= t && t < b.died) ? b.size : 0;
      most_alive = std::max(most_alive, alive);
    }
    EXPECT_GE(total, most_alive);
    EXPECT_LE(total, most_alive * 3 / 2) << "trial " << trial;  // greedy by size is close to the bound
    for (size_t i = 0; i < buffers.size(); ++i) {
      EXPECT_LE(off[i] + buffers[i].size, total);
      for (size_t j = i + 1; j < buffers.size(); ++j) {
        const bool together = buffers[i].born < buffers[j].died && buffers[j].born < buffers[i].died;
        const bool apart = off[i] + buffers[i].size <= off[j] || off[j] + buffers[j].size <= off[i];
        ASSERT_TRUE(!together || apart) << "trial " << trial << ": buffers " << i << " and " << j;
      }
    }
  }
}

// A stand-in for a network's forward pass: a chain of layers, each output a function of the previous one.
Tensor fake_forward(const Tensor& x, std::vector<const float*>* addresses = nullptr) {
  Tensor h = x;
  for (int layer = 0; layer < 6; ++layer) {
    Tensor y({x.numel() * (1 + layer % 3)});
    for (int64_t i = 0; i < y.numel(); ++i) y[i] = h[i % h.numel()] * 0.5f + static_cast<float>(layer);
    Tensor scratch({1024});  // like a kernel's scratch buffer: dead when the layer is done
    std::memset(scratch.data(), 0xab, 4096);
    if (addresses) addresses->push_back(y.data());
    h = y;
  }
  return h;
}

Tensor input() { return Tensor::full({1000}, 2.0f); }

TEST(ActivationArena, ASecondPassReplaysThePlanAndAllocatesNothingElse) {
  ActivationArena arena;
  const Tensor x = input();
  const Tensor expected = fake_forward(x);
  std::vector<const float*> first, second, third;
  Tensor out1, out2, out3;
  {
    ActivationArena::Pass pass(&arena, "net");
    out1 = pass.output(fake_forward(x, &first));
  }
  const ActivationArena::Stats recorded = arena.stats();
  EXPECT_EQ(recorded.recorded, 12u);  // 6 outputs and 6 scratch tensors
  ASSERT_EQ(recorded.plans.size(), 1u);
  EXPECT_EQ(recorded.plans[0].key, "net");
  EXPECT_EQ(recorded.plans[0].buffers, 12u);
  {
    ActivationArena::Pass pass(&arena, "net");
    out2 = pass.output(fake_forward(x, &second));
  }
  {
    ActivationArena::Pass pass(&arena, "net");
    out3 = pass.output(fake_forward(x, &third));
  }
  const ActivationArena::Stats replayed = arena.stats();
  EXPECT_EQ(replayed.planned, 24u);
  EXPECT_EQ(replayed.unplanned, 0u);
  EXPECT_EQ(replayed.heap, 0u);
  EXPECT_EQ(second, third);  // the same offsets every time
  for (const float* p : second) EXPECT_TRUE(arena.contains(p));
  for (const Tensor* out : {&out1, &out2, &out3}) {
    EXPECT_FALSE(arena.contains(out->data()));  // results leave the arena
    ASSERT_EQ(out->numel(), expected.numel());
    EXPECT_EQ(std::memcmp(out->data(), expected.data(), expected.numel() * sizeof(float)), 0);
  }
  // The plan needs no more than the most bytes alive at once: two 12000- or 8000-byte tensors and a scratch.
  EXPECT_LE(replayed.plans[0].bytes, 12032u + 12032u + 4096u);
  EXPECT_LE(replayed.touched_bytes, 2 * (12032u + 8000u + 4096u));
}

TEST(ActivationArena, ATensorKeptLongerThanPlannedIsNeverOverwritten) {
  ActivationArena arena;
  const Tensor x = input();
  auto two_layers = [&](Tensor* keep) {
    Tensor a({4096});
    std::fill(a.data(), a.data() + a.numel(), 1.0f);
    if (keep) *keep = a;  // in the recorded pass `a` died here; now it lives on
    a = Tensor();
    Tensor b({4096});  // planned at a's offset
    std::fill(b.data(), b.data() + b.numel(), 2.0f);
    return b;
  };
  {
    ActivationArena::Pass pass(&arena, "k");
    two_layers(nullptr);
  }
  Tensor kept;
  {
    ActivationArena::Pass pass(&arena, "k");
    const Tensor b = two_layers(&kept);
    EXPECT_TRUE(kept.data() + kept.numel() <= b.data() || b.data() + b.numel() <= kept.data());
  }
  for (int64_t i = 0; i < kept.numel(); ++i) ASSERT_EQ(kept[i], 1.0f);
  EXPECT_GE(arena.stats().unplanned, 1u);
}

TEST(ActivationArena, APassThatAllocatesOtherSizesIsServedAndRecordedAgain) {
  ActivationArena arena;
  {
    ActivationArena::Pass pass(&arena, "k");
    fake_forward(input());
  }
  Tensor out;
  {
    ActivationArena::Pass pass(&arena, "k");  // same key, other shapes: a caller's mistake, not a crash
    out = pass.output(fake_forward(Tensor::full({3000}, 2.0f)));
  }
  EXPECT_EQ(std::memcmp(out.data(), fake_forward(Tensor::full({3000}, 2.0f)).data(), out.numel() * sizeof(float)), 0);
  const ActivationArena::Stats s = arena.stats();
  EXPECT_GE(s.unplanned, 1u);
  EXPECT_TRUE(s.plans.empty());  // dropped: the next pass records afresh
  {
    ActivationArena::Pass pass(&arena, "k");
    fake_forward(Tensor::full({3000}, 2.0f));
  }
  EXPECT_EQ(arena.stats().recorded, s.recorded + 13);  // the input and the 12 buffers of fake_forward
}

TEST(ActivationArena, ResultsThatEscapeAPassComeFromTheHeapNextTime) {
  ActivationArena arena;
  Tensor escaped;
  for (int pass_index = 0; pass_index < 2; ++pass_index) {
    ActivationArena::Pass pass(&arena, "k");
    escaped = fake_forward(input());  // not through output(): alive after the pass
  }
  EXPECT_FALSE(arena.contains(escaped.data()));  // the plan sends it to the heap
  EXPECT_EQ(arena.stats().heap, 1u);
}

TEST(ActivationArena, APassLeftByAnExceptionLeavesNoPlan) {
  ActivationArena arena;
  try {
    ActivationArena::Pass pass(&arena, "k");
    const Tensor t({256});
    throw std::runtime_error("bad input halfway");
  } catch (const std::runtime_error&) {
  }
  EXPECT_TRUE(arena.stats().plans.empty());
}

TEST(ActivationArena, OnlyThePassThreadAllocatesFromIt) {
  ActivationArena arena;
  ActivationArena::Pass pass(&arena, "k");
  const Tensor here({64});
  EXPECT_TRUE(arena.contains(here.data()));
  Tensor there;
  std::thread([&] { there = Tensor({64}); }).join();
  EXPECT_FALSE(arena.contains(there.data()));
  {
    ActivationArena::Pass none(nullptr, "ignored");  // a pass on no arena changes nothing
    EXPECT_TRUE(arena.contains(Tensor({64}).data()));
  }
}

TEST(ActivationArena, OutsideAPassTensorsUseTheHeap) {
  ActivationArena arena;
  EXPECT_FALSE(in_activation_pass());
  EXPECT_FALSE(arena.contains(Tensor({64}).data()));
  ActivationArena::Pass pass(&arena, "k");
  EXPECT_TRUE(in_activation_pass());
}

TEST(ActivationArena, TheFrontHoldsWeightsAndPassesPlaceAfterIt) {
  ActivationArena arena;
  void* front = arena.hold_front(3 << 20);
  ASSERT_NE(front, nullptr);
  EXPECT_TRUE(arena.contains(front));
  std::memset(front, 1, 3 << 20);
  {
    ActivationArena::Pass pass(&arena, "k");
    const Tensor t({1 << 16});
    EXPECT_GE(reinterpret_cast<const char*>(t.data()), static_cast<char*>(front) + (3 << 20));
  }
  arena.release_front(front);
  // 3 MiB rounded up to whole 2 MiB pages, then the pass's 256 KiB tensor.
  EXPECT_EQ(arena.stats().touched_bytes, (size_t{4} << 20) + (size_t{1} << 18));
  // A buffer alive where the front would go: the front cannot be had, and the caller allocates elsewhere.
  ActivationArena::Pass pass(&arena, "other");
  const Tensor t({1 << 16});
  EXPECT_EQ(arena.hold_front(1 << 20), nullptr);
}

// SDXL's two text encoders run together: their copied-in weights stack at the front, the second from the end of
// the first (rounded to 2 MiB), and passes place after both. Released in any order, the front shrinks to the end
// of the holds left, and is whole again once all are gone.
TEST(ActivationArena, FrontHoldsStack) {
  ActivationArena arena;
  char* first = static_cast<char*>(arena.hold_front(3 << 20));
  char* second = static_cast<char*>(arena.hold_front(5 << 20));
  ASSERT_NE(first, nullptr);
  ASSERT_EQ(second, first + (4 << 20));
  std::memset(first, 1, 3 << 20);
  std::memset(second, 2, 5 << 20);
  {
    ActivationArena::Pass pass(&arena, "k");
    const Tensor t({1 << 16});
    EXPECT_GE(reinterpret_cast<const char*>(t.data()), second + (6 << 20));
  }
  EXPECT_EQ(first[(3 << 20) - 1], 1);  // the pass wrote neither hold
  EXPECT_EQ(second[0], 2);
  arena.release_front(first);  // the second still holds: passes stay after it
  {
    ActivationArena::Pass pass(&arena, "k2");
    const Tensor t({1 << 16});
    EXPECT_GE(reinterpret_cast<const char*>(t.data()), second + (6 << 20));
  }
  EXPECT_EQ(arena.hold_front(1 << 20), second + (6 << 20));  // a third stacks after the second
  arena.release_front(second + (6 << 20));
  arena.release_front(second);
  EXPECT_EQ(arena.hold_front(1 << 20), first);  // all released: the front starts at the range's start again
  arena.release_front(first);
  arena.release_front(first);  // released already: nothing happens
}

TEST(ActivationArena, ABufferOutlivingItsArenaStaysValid) {
  Tensor survivor;
  {
    ActivationArena arena;
    ActivationArena::Pass pass(&arena, "k");
    survivor = Tensor::full({1024}, 3.0f);
    EXPECT_TRUE(arena.contains(survivor.data()));
  }
  for (int64_t i = 0; i < survivor.numel(); ++i) ASSERT_EQ(survivor[i], 3.0f);
}

#if defined(__SANITIZE_ADDRESS__)
// Freed arena memory is poisoned: reading a dead tensor's storage is caught as it would be on the heap.
TEST(ActivationArenaDeathTest, AddressSanitizerCatchesAUseAfterFree) {
  ActivationArena arena;
  ActivationArena::Pass pass(&arena, "k");
  const float* dead = Tensor::full({64}, 1.0f).data();
  EXPECT_DEATH(
      {
        volatile float v = dead[3];
        (void)v;
      },
      "use-after-poison");
}
#endif

}  // namespace
}  // namespace sdcpu
