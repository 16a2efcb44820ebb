#include "kernels/scratch.h"

#include "core/activation_arena.h"
#include "core/memory.h"

namespace sdcpu {

namespace {

struct Buffer {
  void* data = nullptr;
  size_t size = 0;
  void release() {
    free_buffer(data);
    data = nullptr;
    size = 0;
  }
  ~Buffer() { release(); }
};

Buffer* thread_buffers() {
  thread_local Buffer buffers[static_cast<int>(ScratchSlot::count)];
  return buffers;
}

}  // namespace

ScratchBuffer::ScratchBuffer(ScratchSlot slot, size_t bytes) {
  if (in_activation_pass()) {
    planned_ = allocate_activation(bytes);
    data_ = planned_.get();
    return;
  }
  Buffer& b = thread_buffers()[static_cast<int>(slot)];
  if (b.size < bytes) {
    b.release();
    b.data = allocate_buffer(bytes);
    b.size = bytes;
  }
  data_ = b.data;
}

void release_scratch_buffers() {
  for (int i = 0; i < static_cast<int>(ScratchSlot::count); ++i) thread_buffers()[i].release();
}

}  // namespace sdcpu
