// safetensors reader: https://github.com/huggingface/safetensors#format
//   [8 bytes little-endian u64 N][N bytes JSON header][data area]
// The header maps tensor names to {dtype, shape, data_offsets: [begin, end)} relative to the data area,
// plus an optional "__metadata__" object of string -> string.
//
// The file is memory-mapped and the whole header validated before any tensor byte is trusted: header
// length inside the file, well-formed JSON, known dtypes, offsets inside the data area, byte size equal
// to dtype size x number of elements, and no two tensors overlapping. Anything else is a ModelError.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace sdcpu {

enum class DType { BOOL, U8, I8, F8_E5M2, F8_E4M3, I16, U16, F16, BF16, I32, U32, F32, F64, I64, U64 };

const char* dtype_name(DType dtype);
size_t dtype_size(DType dtype);

struct TensorInfo {
  std::string name;
  DType dtype;
  Shape shape;
  uint64_t begin = 0;  // byte offsets inside the data area
  uint64_t end = 0;
};

// A validated header. `data_size` is the number of bytes after the header.
struct SafetensorsHeader {
  std::vector<TensorInfo> tensors;  // in header order
  std::map<std::string, std::string> metadata;
  uint64_t header_size = 0;  // N: the JSON length
};

// Parses and validates the header of a safetensors file of `file_size` bytes whose first bytes are
// `bytes` (at least min(file_size, 8 + N) of them). Throws ModelError naming the problem.
SafetensorsHeader parse_safetensors_header(const uint8_t* bytes, size_t file_size);

// Converts `count` elements of a floating-point dtype (F32, F16, BF16, F64) to fp32.
void convert_to_f32(DType dtype, const uint8_t* src, size_t count, float* dst);

class SafetensorsFile {
 public:
  // Maps and validates `path`. Throws ModelError (or IoError when it cannot be opened).
  explicit SafetensorsFile(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<TensorInfo>& tensors() const { return header_.tensors; }
  const std::map<std::string, std::string>& metadata() const { return header_.metadata; }
  // nullptr when there is no such tensor.
  const TensorInfo* find(const std::string& name) const;
  // The raw bytes of a tensor, inside the mapping.
  const uint8_t* bytes(const TensorInfo& info) const { return data_ + info.begin; }

  // A floating-point tensor converted to fp32. Throws ModelError if missing or not floating point.
  Tensor read_f32(const std::string& name) const;
  Tensor read_f32(const TensorInfo& info) const;
  // The same values without a copy where the file stores them as 4-byte aligned fp32: a view into the mapping
  // that keeps `file` open and, when its last copy goes, drops the tensor's pages from memory (as read_f32 does
  // after converting). Other dtypes are converted, as read_f32. Writes to a view go to private copies of the
  // pages (the mapping is copy-on-write), never to the file.
  // `prefault`: map all its pages now, in one call (for a tensor about to be read whole, e.g. to be packed);
  // without it pages come in as they are read (an embedding table of which a prompt reads 77 rows).
  // `info` may also describe a block of rows of a stored tensor (shape and byte range narrowed to them).
  static Tensor view_f32(const std::shared_ptr<const SafetensorsFile>& file, const TensorInfo& info,
                         bool prefault = true);
  // An integer tensor (I64 or I32) as int64 values.
  std::vector<int64_t> read_i64(const std::string& name) const;

 private:
  // Drops the pages wholly inside `info`'s bytes from memory (madvise MADV_DONTNEED).
  void release_pages(const TensorInfo& info) const;

  std::string path_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  const uint8_t* data_ = nullptr;  // start of the data area
  SafetensorsHeader header_;
  std::map<std::string, size_t> index_;
};

// Writes tensors as fp32 (and optional I64 tensors) into a safetensors file. Used by tests and tools.
void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace sdcpu
