#include "kernels/scratch.h"

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

void* scratch_buffer(ScratchSlot slot, size_t bytes) {
  Buffer& b = thread_buffers()[static_cast<int>(slot)];
  if (b.size < bytes) {
    b.release();
    b.data = allocate_buffer(bytes);
    b.size = bytes;
  }
  return b.data;
}

void release_scratch_buffers() {
  for (int i = 0; i < static_cast<int>(ScratchSlot::count); ++i) thread_buffers()[i].release();
}

}  // namespace sdcpu
