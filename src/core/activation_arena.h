// Activation memory planned by liveness (DESIGN.md principle 2; issue 3: "plan all activations into one arena by
// liveness; the denoising loop then allocates nothing").
//
// A network's forward pass makes the same allocations, of the same sizes and in the same order, every time it
// runs on inputs of the same shapes. So the arena records the first pass under a key (each buffer's size, when
// it was allocated and when it was freed) and plans it: every buffer gets an offset in one address range, such
// that buffers alive at the same time never overlap. The placement is "greedy by size" (largest buffer first,
// at the lowest offset that fits beside the placed buffers whose lifetimes overlap its own), the strategy of
// TFLite's arena planner and of Pisarchyk & Lee, "Efficient Memory Management for Deep Neural Net Inference"
// (2020). Every later pass with the same key takes its buffers at those offsets: no allocator call, no page
// fault, and a peak that is the plan's, not the allocator's.
//
// Plans are checked, not trusted. Each buffer handed out is checked against the buffers alive in the arena at
// that moment; one that would overlap (a tensor kept longer than in the recorded pass, a pass that allocates
// differently) goes to the first free gap instead, and a pass that allocates a different size from its plan
// drops the plan, so that the next pass records a new one. Only when the range is full does a buffer come from
// the heap. A wrong plan costs memory, never correctness.
//
// The range is reserved once as address space (the machine's RAM size, without access, so that no memory is
// committed or charged), made usable in 64 MiB steps as the plans need it, and the pages it touches stay with the
// process. Freed activation memory is thus reused at once by the next
// pass, and never given back and faulted in again: on this project's VM a never-touched page costs about 25x a
// reused one (1.5 GB: 2.4 s against 0.095 s). The pages in use are the high-water mark of the passes, which
// stats() reports.
//
// Low-memory mode also puts the running network's weights at the front of the range (hold_front) while it runs,
// with its activations after them: the largest stage's weights plus activations, rather than the sum of all
// stages, is then what the process holds (pipeline/txt2img.h MemoryOptions). Networks that run together (SDXL's
// two text encoders) stack their weights there, one hold after the other.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace sdcpu {

class Tensor;

class ActivationArena {
 public:
  // Reserves the address range. Should that fail, the arena still works and every buffer comes from the heap.
  ActivationArena();
  // Buffers still alive keep the range mapped until the last of them is freed.
  ~ActivationArena();
  ActivationArena(const ActivationArena&) = delete;
  ActivationArena& operator=(const ActivationArena&) = delete;

  // While a Pass lives, the Tensors and kernel scratch buffers (kernels/scratch.h) that its thread allocates
  // come from the arena, following the plan recorded under `key` (recording it when there is none). `key` must
  // name everything that changes the sequence of allocations: the network and its input shapes. Other threads
  // allocate from the heap. Passes nest: the inner one is current until it ends. A Pass on nullptr does nothing.
  class Pass {
   public:
    Pass(ActivationArena* arena, std::string key);
    ~Pass();
    Pass(const Pass&) = delete;
    Pass& operator=(const Pass&) = delete;

    // `t` itself, or a copy on the heap when its storage is in the arena: a pass's result goes through output(),
    // so that nothing in the arena outlives the pass it was planned in.
    Tensor output(const Tensor& t);

   private:
    friend class ActivationArena;
    friend std::shared_ptr<void> allocate_activation(size_t bytes);
    struct Recording;
    ActivationArena* arena_;
    std::string key_;
    Pass* outer_ = nullptr;
    int uncaught_ = 0;                      // std::uncaught_exceptions() when the pass began
    std::shared_ptr<Recording> recording_;  // null when replaying a plan
    size_t next_ = 0;                       // index of the pass's next allocation
    bool diverged_ = false;                 // it allocated a size its plan does not have at that index
  };

  // `bytes` at the front of the range, for one network's copied-in weights (kernels/packed_weight_cache.h), until
  // release_front() of the same pointer; passes then place their buffers after them. Holds stack: a second one
  // begins where the first ends (rounded up to 2 MiB), so that networks that run together share the front rather
  // than one of them taking a heap buffer that outlives the stage. nullptr when a live buffer lies where the hold
  // would go or when the range is too small: the caller then allocates elsewhere.
  void* hold_front(size_t bytes);
  // Ends the hold that hold_front() returned `held` for. The front shrinks to the end of the holds that remain.
  void release_front(const void* held);

  // Whether `p` points into the range.
  bool contains(const void* p) const;

  struct Stats {
    size_t reserved_bytes = 0;
    size_t touched_bytes = 0;  // the high-water mark of the range: what the arena keeps in memory
    struct PlanInfo {
      std::string key;
      size_t bytes = 0;    // the range it needs after the front
      size_t buffers = 0;  // allocations per pass
    };
    std::vector<PlanInfo> plans;
    uint64_t planned = 0;    // buffers placed at their planned offset
    uint64_t recorded = 0;   // buffers of recording passes (placed first fit)
    uint64_t unplanned = 0;  // buffers of planned passes placed first fit: the plan did not hold for them
    uint64_t heap = 0;       // buffers of passes that came from the heap: the range was full
  };
  Stats stats() const;

 private:
  struct State;
  std::shared_ptr<void> allocate(Pass& pass, size_t bytes);
  void end_pass(Pass& pass);
  friend std::shared_ptr<void> allocate_activation(size_t bytes);
  std::shared_ptr<State> state_;
};

// `bytes` (> 0) of memory, 64-byte aligned, for a tensor or a kernel's scratch buffer: from the arena of the
// calling thread's current Pass, else from the heap (core/memory.h allocate_buffer). Freed with the last
// shared_ptr. Throws std::bad_alloc.
std::shared_ptr<void> allocate_activation(size_t bytes);
// Whether the calling thread is inside a Pass on an arena.
bool in_activation_pass();

// The offsets of greedy-by-size placement (see above) for buffers of `sizes` bytes (multiples of 64) alive over
// the half-open intervals [born[i], died[i]) of one clock; returns the bytes the plan needs. Exposed for tests.
size_t plan_activation_offsets(const size_t* sizes, const uint64_t* born, const uint64_t* died, size_t count,
                               size_t* offsets);

}  // namespace sdcpu
