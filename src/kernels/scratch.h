// Per-thread scratch buffers for activations on their way into or out of a oneDNN primitive (reorders into
// blocked layouts, fp32 -> bf16 conversions). Each slot is grown when a larger request comes and never shrunk, so
// steady-state steps allocate (and page-fault) nothing. A slot's contents are valid until the next call for the
// same slot on the same thread: callers use them within one kernel call.
#pragma once
#include <cstddef>

namespace sdcpu {

// conv_src/conv_dst: an activation reordered into/out of the blocked layout; linear_src: rows rounded to bf16;
// primitive: the scratchpad a oneDNN primitive needs while it runs (scratchpad_mode::user, so that it is ours to
// reuse and release rather than oneDNN's).
enum class ScratchSlot { conv_src, conv_dst, linear_src, primitive, count };

// 64-byte aligned, at least `bytes` long. Throws std::bad_alloc.
void* scratch_buffer(ScratchSlot slot, size_t bytes);
// Frees the calling thread's slots (the next request allocates again): the pipeline calls it when it moves from
// one network to the next, so the VAE decoder's 128 MB buffers do not stay through the next image's UNet.
void release_scratch_buffers();

}  // namespace sdcpu
