// Scratch buffers for activations on their way into or out of a oneDNN primitive (reorders into blocked layouts,
// fp32 -> bf16 conversions) and for the primitives' own scratchpads. A ScratchBuffer lives for one kernel call.
// - Inside an activation arena pass (core/activation_arena.h), as in the pipeline, it is one more planned buffer of
//   the pass: its memory is shared with the activations that are dead while it lives.
// - Outside one, it is the calling thread's slot for that purpose, grown when a larger request comes and never
//   shrunk, so that repeated calls allocate (and page-fault) nothing. Slots are valid until the next buffer of the
//   same slot on the same thread: one buffer per slot at a time.
#pragma once
#include <cstddef>
#include <memory>

namespace sdcpu {

// conv_src/conv_dst: an activation reordered into/out of the blocked layout; linear_src: rows rounded to bf16;
// primitive: the scratchpad a oneDNN primitive needs while it runs (scratchpad_mode::user, so that it is ours to
// plan and reuse rather than oneDNN's); int8_scales: an int8 product's per-call output scales and scaled bias.
enum class ScratchSlot { conv_src, conv_dst, linear_src, primitive, int8_scales, count };

class ScratchBuffer {
 public:
  ScratchBuffer() = default;  // no memory
  // At least `bytes` (> 0), 64-byte aligned. Throws std::bad_alloc.
  ScratchBuffer(ScratchSlot slot, size_t bytes);
  void* data() const { return data_; }

 private:
  std::shared_ptr<void> planned_;  // the arena's buffer, inside a pass
  void* data_ = nullptr;
};

// Frees the calling thread's slots (the next request allocates again).
void release_scratch_buffers();

}  // namespace sdcpu
