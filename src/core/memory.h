// Large buffers: activations, packed weights, scratch. Aligned for SIMD and, where they are big, backed by
// transparent huge pages (THP in "madvise" mode, the usual default, serves only memory advised MADV_HUGEPAGE).
// Why: first-touching 1.7 GB of packed weights or a 128 MB activation in 4 KiB pages costs one page fault per
// 4 KiB, and under virtualization those faults dominated loading (measured with a full-size SD 1.5, bf16, page
// cache warm: load + a 64x64 image 7.2 s -> 4.4 s with huge pages).
#pragma once
#include <cstddef>
#include <memory>

namespace sdcpu {

// At least `bytes` (> 0), 64-byte aligned; from 16 MiB up also 2 MiB aligned and advised MADV_HUGEPAGE (below
// that, rounding up to whole huge pages would waste too much). Free with free_buffer. Throws std::bad_alloc.
void* allocate_buffer(size_t bytes);
void free_buffer(void* p);

// Hands the allocator's free memory back to the operating system (tcmalloc's ReleaseFreeMemory when it is the
// allocator, else glibc's malloc_trim). The pipeline calls it between networks: freed activations of one stage
// would otherwise stay in the process through the next (measured, bf16 512x512: 1.3 GB of the VAE decoder's under
// the next image's UNet, whose weights then come on top).
void release_free_memory();

// Pages of a read-only file mapping (safetensors files, the weight cache):
// - prefault_mapped maps every page touching [p, p + bytes) in one call (MADV_POPULATE_READ, Linux 5.14) rather
//   than one page fault at a time as the bytes are first read: faults are costly under virtualization. Advisory:
//   on older kernels the pages fault in as usual.
// - drop_mapped drops from the process the pages wholly inside [p, p + bytes) (MADV_DONTNEED; a page shared
//   with a neighbour stays). The mapping must be private and never written: a dropped page is read from the
//   file (or the page cache) again when touched.
void prefault_mapped(const void* p, size_t bytes);
void drop_mapped(const void* p, size_t bytes);

// Long-lived buffers of any size carved out of shared 64 MiB huge-page slabs, for packed weights: hundreds of
// weights of 1-30 MB each would waste up to 2 MiB apiece if each were rounded to whole huge pages. A slab is
// freed when the last buffer in it is. Thread-safe.
class SlabBuffer {
 public:
  explicit SlabBuffer(size_t bytes);  // 64-byte aligned; bigger than a slab gets a slab of its own
  void* data() const { return data_; }

 private:
  struct Slab;
  std::shared_ptr<Slab> slab_;
  void* data_ = nullptr;
};

}  // namespace sdcpu
