#include "kernels/scratch.h"

#include "core/memory.h"

namespace sdcpu {

void* scratch_buffer(ScratchSlot slot, size_t bytes) {
  struct Buffer {
    void* data = nullptr;
    size_t size = 0;
    ~Buffer() { free_buffer(data); }
  };
  thread_local Buffer buffers[static_cast<int>(ScratchSlot::count)];
  Buffer& b = buffers[static_cast<int>(slot)];
  if (b.size < bytes) {
    free_buffer(b.data);
    b.data = nullptr;
    b.size = 0;
    b.data = allocate_buffer(bytes);
    b.size = bytes;
  }
  return b.data;
}

}  // namespace sdcpu
