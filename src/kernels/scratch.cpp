#include "kernels/scratch.h"

#include <cstdlib>
#include <new>

namespace sdcpu {

void* scratch_buffer(ScratchSlot slot, size_t bytes) {
  struct Buffer {
    void* data = nullptr;
    size_t size = 0;
    ~Buffer() { std::free(data); }
  };
  thread_local Buffer buffers[static_cast<int>(ScratchSlot::count)];
  Buffer& b = buffers[static_cast<int>(slot)];
  if (b.size < bytes) {
    std::free(b.data);
    b.size = 0;
    b.data = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (b.data == nullptr) throw std::bad_alloc();
    b.size = bytes;
  }
  return b.data;
}

}  // namespace sdcpu
