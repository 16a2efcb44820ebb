// The file of the on-disk cache of packed weights (its layout is described in kernels/packed_weight_cache.h) and
// the writer that makes one, front to back, one weight at a time.
//
// Streaming matters for memory: the first start of a model writes each weight here as soon as it is packed and
// frees it, so it never holds a network's packed weights in memory beside the file (issue 13: 3.65 GB at the first
// start of SD 1.5 in bf16 before, about the steady state's peak now). The room for the index is reserved before
// the data, from an upper bound the caller gives (the names the weights may have), so no byte is written twice.
//
// Crash safety: everything goes to a temporary file beside the final one ("<path>.tmp.<pid>"), whose header is
// written last; commit() syncs it to disk and only then renames it over the final path. After a crash there is
// either no file or a whole one at the path; a temporary file is never opened as a cache (another name), has no
// valid header until the end, and is removed by the writer's destructor or, left by a process that died, by the
// next writer of the same path.
#pragma once
#include <cstdint>
#include <dnnl.hpp>
#include <memory>
#include <set>
#include <string>
#include <vector>

namespace sdcpu {

namespace packed_weight_file {
inline constexpr char kMagic[8] = {'S', 'D', 'C', 'P', 'U', 'P', 'W', '1'};
inline constexpr uint32_t kVersion = 1;
inline constexpr size_t kHeaderBytes = 64;
inline constexpr uint64_t kDataAlign = uint64_t{2} << 20;  // the data area starts on a huge-page boundary
inline constexpr uint64_t kEntryAlign = 4096;              // each entry on a page boundary
// The bytes one index entry takes: u32 name bytes, name, u32 descriptor bytes, descriptor, u64 offset, u64 bytes.
uint64_t index_entry_bytes(const std::string& name);
}  // namespace packed_weight_file

class PackedWeightFileWriter {
 public:
  // Creates the temporary file for `path` (removing those that writers of `path` which died left behind). Room
  // is left for an index of up to `max_index_bytes` (the sum of index_entry_bytes over the names that may come).
  // IoError when the file cannot be created.
  PackedWeightFileWriter(std::string path, std::string fingerprint, uint64_t max_index_bytes);
  ~PackedWeightFileWriter();  // without commit(): removes the temporary file
  PackedWeightFileWriter(const PackedWeightFileWriter&) = delete;
  PackedWeightFileWriter& operator=(const PackedWeightFileWriter&) = delete;

  // Appends weight `name`, `desc.get_size()` bytes at `data`. A name already written is skipped (returns false).
  // IoError when the disk refuses or the index would outgrow its room.
  bool add(const std::string& name, const dnnl::memory::desc& desc, const void* data);
  // Writes the header and index, syncs the file and renames it over the path. IoError when the disk refuses (the
  // temporary file is then removed).
  void commit();

  const std::string& temp_path() const { return temp_; }
  size_t entries() const { return names_.size(); }

 private:
  class ChunkedWriter;
  std::string path_, temp_, fingerprint_;
  int fd_ = -1;
  uint64_t data_offset_ = 0, data_bytes_ = 0, max_index_bytes_ = 0;
  std::vector<uint8_t> index_;
  uint32_t count_ = 0;
  std::set<std::string> names_;
  std::unique_ptr<ChunkedWriter> out_;
};

}  // namespace sdcpu
