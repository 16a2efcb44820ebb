// An on-disk copy of one network's prepacked weights (issue 3: "optional on-disk cache of prepacked weights so a
// second start is fast"). The first start converts and reorders every weight of the checkpoint into the blocked
// layout oneDNN asked for and writes the results here; later starts map this file and hand its bytes to the
// primitives as they are, without reading the checkpoint's weights at all.
//
// Being file-backed, the packed weights of a network that is not running can also be handed back to the page
// cache (release) and mapped again in one call when it runs next (Use): the text encoder, UNet and VAE are
// needed one after another, so the process holds the weights of one of them at a time (1.7 GB of bf16 UNet
// instead of 2.1 GB for all three, plus activations). The pages stay in the page cache, clean: the kernel
// may drop them under memory pressure and read them again from disk.
//
// File layout (little-endian, our own format):
//   header    64 bytes: magic "SDCPUPW1", u32 version, u32 entry count, u64 fingerprint bytes, u64 index bytes,
//             u64 data offset, u64 file bytes, 16 bytes zero
//   fingerprint   what the weights were packed from and for (see pipeline/weight_cache.h); a file whose
//                 fingerprint differs is not used
//   index     per entry: u32 name bytes, name, u32 desc bytes, the oneDNN memory descriptor (dnnl_memory_desc_t),
//             u64 offset from the data start, u64 bytes
//   data      from a 2 MiB boundary (so the kernel can map it with huge pages), each entry at a 4 KiB boundary
// Everything is validated before a byte is trusted: sizes, offsets inside the file, entries inside the data and
// not overlapping, unique names. A damaged file is ignored (and rewritten by the pipeline), never trusted.
#pragma once
#include <cstddef>
#include <cstdint>
#include <dnnl.hpp>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/activation_arena.h"

namespace sdcpu {

struct PackedWeightEntry {
  std::string name;
  std::vector<uint8_t> desc;  // the bytes of the dnnl_memory_desc_t the data is laid out in
  uint64_t offset = 0;        // from the start of the data area
  uint64_t bytes = 0;
};

struct PackedWeightIndex {
  std::string fingerprint;
  std::vector<PackedWeightEntry> entries;
  uint64_t data_offset = 0;  // from the start of the file
};

// Parses and validates the header and index of a cache file of `size` bytes (all of them in `bytes`). Throws
// ModelError naming the problem.
PackedWeightIndex parse_packed_weight_index(const uint8_t* bytes, size_t size);

class PackedWeightFileWriter;

class PackedWeightCache {
 public:
  // Opens the cache file `path` for weights described by `fingerprint`. A missing file, one with another
  // fingerprint or a damaged one gives an empty cache (state() says which); none of these throw.
  PackedWeightCache(std::string path, std::string fingerprint);
  ~PackedWeightCache();
  PackedWeightCache(const PackedWeightCache&) = delete;
  PackedWeightCache& operator=(const PackedWeightCache&) = delete;

  const std::string& path() const { return path_; }
  // "missing", "stale" (another fingerprint), "damaged: <reason>" or "valid".
  const std::string& state() const { return state_; }
  bool valid() const { return map_ != nullptr; }

  // The bytes of weight `name` packed in layout `desc`, inside the mapped file (valid as long as this object),
  // or nullptr when the file has no such weight in that layout. A miss is counted.
  const void* find(const std::string& name, const dnnl::memory::desc& desc);
  // Takes a weight packed because find() missed. Normally it is remembered for save(), `keep` holding its memory
  // until then, and record returns false. While streaming (stream_misses) its bytes go to the new file at once
  // and record returns true: the caller may free them (the layer that packed them can then not run).
  bool record(const std::string& name, const dnnl::memory& packed, std::shared_ptr<const void> keep);
  // True when every weight asked for was found: the file needs no rewrite.
  bool complete() const { return misses_ == 0 && asked_total_ > 0; }
  size_t misses() const { return misses_; }
  size_t entries() const { return index_.entries.size(); }

  // Streaming, for a first start (kernels/packed_weight_file.h): from the first weight find() misses on, the new
  // file is written while the network is built, each weight as it comes, those found before first; so no
  // network's packed weights are held in memory beside the file. `names`: every name a weight may have (room
  // for the index is reserved from them). When the temporary file cannot be made, or a write fails, streaming
  // stops, record() keeps the weights again, and save() throws the reason.
  void stream_misses(const std::vector<std::string>& names);
  // Some weight went only to the file being written (record() returned true): the layers built meanwhile can
  // not run, so if save() fails the network must be packed again from the checkpoint.
  bool dropped_weights() const { return dropped_weights_; }

  // Writes every weight found or recorded to the path, or, while streaming, finishes the file being written (a
  // temporary file, synced, then renamed over the path, so a reader never sees half a file). Throws IoError when
  // the disk refuses.
  void save();

  // While a Use lives, the network's weights are in this process's memory; when the last one ends they leave it.
  // Thread-safe. Two ways:
  // - mapped (the default): the first Use maps the file's pages all at once (MADV_POPULATE_READ), the last drops
  //   them from the process (MADV_DONTNEED; they stay in the page cache);
  // - copied in (set_copy_in, for MemoryOptions::low_memory): the first Use reads the weights into the front of
  //   an activation arena (core/activation_arena.h hold_front) and points the layers' memory objects at it; the
  //   last points them back at the mapping and lets the front go. The next network's weights and activations
  //   then reuse those same physical pages: a fresh page costs a fault and a zeroing, which on this project's VM
  //   made a 512x512 VAE decode 0.7-1.9 s slower, while the copy costs about 0.2 s per 1.7 GB from the page
  //   cache. Networks used together (SDXL's two text encoders) stack their copies at the front. Without an
  //   arena, or when a live buffer lies where the copy would go, it goes to a buffer from the heap.
  class Use {
   public:
    explicit Use(PackedWeightCache* cache);  // nullptr: does nothing
    ~Use();
    Use(const Use&) = delete;
    Use& operator=(const Use&) = delete;

   private:
    PackedWeightCache* cache_;
  };
  // Drops the mapped pages now (no Use may be alive); the pipeline calls it after loading.
  void release_pages();
  // Keeps the pages mapped after the last Use ends (MemoryOptions::low_memory off: memory is plentiful, and the
  // next Use then finds them in place).
  void set_keep_mapped(bool keep) { keep_mapped_ = keep; }
  void set_copy_in(bool copy_in, ActivationArena* arena = nullptr) {
    copy_in_ = copy_in;
    copy_arena_ = arena;
  }
  // The memory objects whose data are in this file (PackedWeights registers those it took from find()), for
  // copy-in mode to re-point. A memory object must be detached before it is destroyed.
  void attach(dnnl::memory* mem);
  void detach(dnnl::memory* mem);

 private:
  struct Asked {
    std::string name;
    const void* data;
    dnnl::memory::desc desc;
    std::shared_ptr<const void> keep;
  };
  void prefault_pages();
  bool inside_mapping(const void* p) const;
  void start_streaming();
  // Appends a weight to the file being streamed; false (and streaming stopped) when the disk refuses.
  bool stream_write(const std::string& name, const dnnl::memory::desc& desc, const void* bytes);
  void copy_in();
  void copy_out();
  void free_copy();
  const uint8_t* data() const { return static_cast<const uint8_t*>(map_) + index_.data_offset; }

  std::string path_, fingerprint_, state_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  PackedWeightIndex index_;
  std::vector<Asked> asked_;  // every weight found or recorded and not streamed, in order, for save()
  size_t asked_total_ = 0;    // found or recorded, streamed or not
  size_t misses_ = 0;
  bool stream_ = false;  // stream_misses() was called
  uint64_t stream_index_bytes_ = 0;
  std::unique_ptr<PackedWeightFileWriter> writer_;  // the file being streamed
  std::string write_error_;                         // why streaming stopped
  bool dropped_weights_ = false;
  bool keep_mapped_ = false;
  bool mapped_ = false;   // keep_mapped_: the pages were mapped by a Use and stay
  std::mutex use_mutex_;  // guards users_, attached_, copy_
  int users_ = 0;
  bool copy_in_ = false;
  struct Attached {
    dnnl::memory* mem;
    size_t offset;  // of its data from the start of the data area
  };
  std::vector<Attached> attached_;
  void* copy_ = nullptr;  // the copied-in data area while in use in copy-in mode
  ActivationArena* copy_arena_ = nullptr;
  bool copy_in_arena_ = false;  // copy_ is copy_arena_'s front, not a heap buffer
};

}  // namespace sdcpu
