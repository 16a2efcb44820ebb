// Per-thread scratch buffers for activations on their way into or out of a oneDNN primitive (reorders into
// blocked layouts, fp32 -> bf16 conversions). Each slot is grown when a larger request comes and never shrunk, so
// steady-state steps allocate (and page-fault) nothing. A slot's contents are valid until the next call for the
// same slot on the same thread: callers use them within one kernel call.
#pragma once
#include <cstddef>

namespace sdcpu {

enum class ScratchSlot { conv_src, conv_dst, linear_src, count };

// 64-byte aligned, at least `bytes` long. Throws std::bad_alloc.
void* scratch_buffer(ScratchSlot slot, size_t bytes);

}  // namespace sdcpu
