#include "core/memory.h"

#include <malloc.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <new>

namespace sdcpu {
namespace {

constexpr size_t kHugePage = size_t{2} << 20;
constexpr size_t kHugeFrom = size_t{16} << 20;
constexpr size_t kSlabSize = size_t{64} << 20;

void* allocate_huge(size_t bytes) {
  const size_t size = (bytes + kHugePage - 1) / kHugePage * kHugePage;  // aligned_alloc: a multiple of the alignment
  void* p = std::aligned_alloc(kHugePage, size);
  if (!p) throw std::bad_alloc();
#ifdef MADV_HUGEPAGE
  ::madvise(p, size, MADV_HUGEPAGE);  // advisory: without THP the pages are simply 4 KiB ones
#endif
  return p;
}

}  // namespace

// Defined by tcmalloc when it is linked (the Release build), absent otherwise (sanitizer builds bring their own
// allocator): a weak reference is null then.
extern "C" void MallocExtension_ReleaseFreeMemory(void) __attribute__((weak));

void release_free_memory() {
  if (MallocExtension_ReleaseFreeMemory)
    MallocExtension_ReleaseFreeMemory();
  else
    ::malloc_trim(0);
}

void prefault_mapped(const void* p, size_t bytes) {
#ifdef MADV_POPULATE_READ
  const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t begin = reinterpret_cast<uintptr_t>(p) & ~(page - 1);
  const uintptr_t end = reinterpret_cast<uintptr_t>(p) + bytes;
  if (end > begin) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_POPULATE_READ);
#else
  (void)p, (void)bytes;
#endif
}

void drop_mapped(const void* p, size_t bytes) {
  const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(p) + page - 1) & ~(page - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(p) + bytes) & ~(page - 1);
  if (end > begin) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

void* allocate_buffer(size_t bytes) {
  if (bytes >= kHugeFrom) return allocate_huge(bytes);
  void* p = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
  if (!p) throw std::bad_alloc();
  return p;
}

void free_buffer(void* p) { std::free(p); }

struct SlabBuffer::Slab {
  void* base = nullptr;
  size_t size = 0, used = 0;  // `used` only changes under the mutex below, while this is the open slab
  explicit Slab(size_t bytes) : base(allocate_huge(bytes)), size(bytes) {}
  ~Slab() { std::free(base); }
};

SlabBuffer::SlabBuffer(size_t bytes) {
  static std::mutex mutex;
  static std::weak_ptr<Slab> open;  // the slab new buffers go to; weak, so a slab nobody uses is freed
  const size_t need = (bytes + 63) / 64 * 64;
  if (need > kSlabSize / 4) {  // big weights get their own slab, so they never strand the open one's tail
    slab_ = std::make_shared<Slab>(need);
    data_ = slab_->base;
    return;
  }
  std::lock_guard<std::mutex> lock(mutex);
  slab_ = open.lock();
  if (!slab_ || slab_->size - slab_->used < need) {
    slab_ = std::make_shared<Slab>(kSlabSize);
    open = slab_;
  }
  data_ = static_cast<char*>(slab_->base) + slab_->used;
  slab_->used += need;
}

}  // namespace sdcpu
