#include "formats/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/memory.h"

namespace sdcpu {
namespace {

// Real headers are a few hundred KiB (SDXL: ~300 KiB); anything beyond this is not a model.
constexpr uint64_t kMaxHeaderSize = 100ull << 20;
constexpr int kMaxRank = 8;

struct DTypeEntry {
  const char* name;
  DType dtype;
  size_t size;
};
constexpr DTypeEntry kDTypes[] = {
    {"BOOL", DType::BOOL, 1},       {"U8", DType::U8, 1},   {"I8", DType::I8, 1},   {"F8_E5M2", DType::F8_E5M2, 1},
    {"F8_E4M3", DType::F8_E4M3, 1}, {"I16", DType::I16, 2}, {"U16", DType::U16, 2}, {"F16", DType::F16, 2},
    {"BF16", DType::BF16, 2},       {"I32", DType::I32, 4}, {"U32", DType::U32, 4}, {"F32", DType::F32, 4},
    {"F64", DType::F64, 8},         {"I64", DType::I64, 8}, {"U64", DType::U64, 8},
};

[[noreturn]] void fail(const std::string& what) { throw ModelError("safetensors: " + what); }

float f16_to_f32(uint16_t h) {
  const uint32_t sign = (h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalize
      exp = 127 - 15 + 1;
      while (!(mant & 0x400)) {
        mant <<= 1;
        --exp;
      }
      mant &= 0x3ff;
      bits = sign | (exp << 23) | (mant << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  return std::bit_cast<float>(bits);
}

}  // namespace

const char* dtype_name(DType dtype) {
  for (const auto& e : kDTypes)
    if (e.dtype == dtype) return e.name;
  return "?";
}

size_t dtype_size(DType dtype) {
  for (const auto& e : kDTypes)
    if (e.dtype == dtype) return e.size;
  return 0;
}

SafetensorsHeader parse_safetensors_header(const uint8_t* bytes, size_t file_size) {
  if (file_size < 8) fail("file is " + std::to_string(file_size) + " bytes, too short for the 8-byte header length");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | bytes[i];
  if (n > file_size - 8)
    fail("header length " + std::to_string(n) + " goes beyond the end of the file (" + std::to_string(file_size) +
         " bytes): truncated or not a safetensors file");
  if (n > kMaxHeaderSize) fail("header length " + std::to_string(n) + " is implausibly large");
  if (n < 2) fail("header length " + std::to_string(n) + " is too small for a JSON object");
  const uint64_t data_size = file_size - 8 - n;

  nlohmann::json header;
  try {
    header = nlohmann::json::parse(bytes + 8, bytes + 8 + n);
  } catch (const nlohmann::json::exception& e) {
    fail(std::string("header is not valid JSON: ") + e.what());
  }
  if (!header.is_object()) fail("header is not a JSON object");

  SafetensorsHeader out;
  out.header_size = n;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const nlohmann::json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) fail("__metadata__ is not an object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string()) fail("__metadata__ value for '" + m.key() + "' is not a string");
        out.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string where = "tensor '" + name + "'";
    if (!v.is_object()) fail(where + ": entry is not an object");
    auto dt = v.find("dtype");
    auto sh = v.find("shape");
    auto off = v.find("data_offsets");
    if (dt == v.end() || !dt->is_string()) fail(where + ": missing or non-string dtype");
    if (sh == v.end() || !sh->is_array()) fail(where + ": missing or non-array shape");
    if (off == v.end() || !off->is_array() || off->size() != 2) fail(where + ": data_offsets must be [begin, end]");

    TensorInfo info;
    info.name = name;
    const std::string dts = dt->get<std::string>();
    const DTypeEntry* entry = nullptr;
    for (const auto& e : kDTypes)
      if (dts == e.name) entry = &e;
    if (!entry) fail(where + ": unknown dtype '" + dts + "'");
    info.dtype = entry->dtype;

    if (sh->size() > kMaxRank) fail(where + ": rank " + std::to_string(sh->size()) + " is too large");
    uint64_t numel = 1;
    for (const auto& d : *sh) {
      if (!d.is_number_unsigned()) fail(where + ": shape entries must be non-negative integers");
      const uint64_t dim = d.get<uint64_t>();
      if (dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) fail(where + ": dimension too large");
      if (dim != 0 && numel > data_size / dim) {
        // numel * elemsize cannot fit in the data area (also guards the multiplication).
        numel = std::numeric_limits<uint64_t>::max();
        break;
      }
      numel *= dim;
      info.shape.push_back(static_cast<int64_t>(dim));
    }
    for (const auto& o : *off)
      if (!o.is_number_unsigned()) fail(where + ": data_offsets must be non-negative integers");
    info.begin = (*off)[0].get<uint64_t>();
    info.end = (*off)[1].get<uint64_t>();
    if (info.begin > info.end) fail(where + ": data_offsets begin > end");
    if (info.end > data_size)
      fail(where + ": data_offsets [" + std::to_string(info.begin) + ", " + std::to_string(info.end) +
           ") lie outside the data area of " + std::to_string(data_size) + " bytes (truncated file?)");
    if (numel == std::numeric_limits<uint64_t>::max() || numel * entry->size != info.end - info.begin)
      fail(where + ": " + std::to_string(info.end - info.begin) + " bytes do not match dtype " + dts + " x shape " +
           shape_to_string(info.shape));
    out.tensors.push_back(std::move(info));
  }

  std::vector<const TensorInfo*> by_offset;
  for (const auto& t : out.tensors) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(), [](auto* a, auto* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < by_offset.size(); ++i)
    if (by_offset[i]->begin < by_offset[i - 1]->end && by_offset[i]->begin != by_offset[i]->end &&
        by_offset[i - 1]->begin != by_offset[i - 1]->end)
      fail("tensors '" + by_offset[i - 1]->name + "' and '" + by_offset[i]->name + "' overlap");
  return out;
}

void convert_chunk_to_f32(DType dtype, const uint8_t* src, size_t count, float* dst) {
  switch (dtype) {
    case DType::F32:
      std::memcpy(dst, src, count * 4);
      return;
    case DType::F16:
      for (size_t i = 0; i < count; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        dst[i] = f16_to_f32(h);
      }
      return;
    case DType::BF16:
      for (size_t i = 0; i < count; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        dst[i] = std::bit_cast<float>(static_cast<uint32_t>(h) << 16);
      }
      return;
    case DType::F64:
      for (size_t i = 0; i < count; ++i) {
        double d;
        std::memcpy(&d, src + 8 * i, 8);
        dst[i] = static_cast<float>(d);
      }
      return;
    default:
      throw ModelError(std::string("cannot convert dtype ") + dtype_name(dtype) + " to fp32");
  }
}

// Loading is this copy (plus the page faults that bring the file's pages in): on every thread, so a model loads
// at the memory bandwidth of all cores rather than one. Measured on the full-size SD 1.5 folder (fp32, 3.4 GB,
// page cache warm), 2 threads: see the README's load figures.
void convert_to_f32(DType dtype, const uint8_t* src, size_t count, float* dst) {
  if (dtype != DType::F32 && dtype != DType::F16 && dtype != DType::BF16 && dtype != DType::F64)
    throw ModelError(std::string("cannot convert dtype ") + dtype_name(dtype) + " to fp32");
  constexpr size_t kChunk = size_t{1} << 18;  // elements: 1 MiB of fp32, enough to amortize the scheduling
  const size_t elem = dtype_size(dtype);
  const int64_t chunks = static_cast<int64_t>((count + kChunk - 1) / kChunk);
#pragma omp parallel for schedule(dynamic, 1) if (chunks > 1)
  for (int64_t c = 0; c < chunks; ++c) {
    const size_t begin = static_cast<size_t>(c) * kChunk, n = std::min(kChunk, count - begin);
    convert_chunk_to_f32(dtype, src + begin * elem, n, dst + begin);
  }
}

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw IoError("cannot open " + path + ": " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw ModelError(path + ": not a regular file");
  }
  map_size_ = static_cast<size_t>(st.st_size);
  if (map_size_ > 0) {
    // Writable but private: weights handed out as views (view_f32) are Tensors, whose data a careless caller could
    // write; such a write copies the page instead of faulting, and never reaches the file.
    map_ = ::mmap(nullptr, map_size_, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (map_ == MAP_FAILED) {
      map_ = nullptr;
      ::close(fd);
      throw IoError("cannot map " + path + ": " + std::strerror(errno));
    }
  }
  ::close(fd);
  try {
    header_ = parse_safetensors_header(static_cast<const uint8_t*>(map_), map_size_);
  } catch (const ModelError& e) {
    if (map_) ::munmap(map_, map_size_);
    throw ModelError(path + ": " + e.what());
  }
  data_ = static_cast<const uint8_t*>(map_) + 8 + header_.header_size;
  for (size_t i = 0; i < header_.tensors.size(); ++i) index_[header_.tensors[i].name] = i;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) ::munmap(map_, map_size_);
}

const TensorInfo* SafetensorsFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &header_.tensors[it->second];
}

Tensor SafetensorsFile::read_f32(const std::string& name) const {
  const TensorInfo* info = find(name);
  if (!info) throw ModelError(path_ + ": no tensor named '" + name + "'");
  return read_f32(*info);
}

Tensor SafetensorsFile::read_f32(const TensorInfo& info) const {
  Tensor t(info.shape);
  prefault_mapped(bytes(info), info.end - info.begin);  // loading touches every weight exactly once
  try {
    convert_to_f32(info.dtype, bytes(info), static_cast<size_t>(t.numel()), t.data());
  } catch (const ModelError& e) {
    throw ModelError(path_ + ": tensor '" + info.name + "': " + e.what());
  }
  release_pages(info);
  return t;
}

Tensor SafetensorsFile::view_f32(const std::shared_ptr<const SafetensorsFile>& file, const TensorInfo& info,
                                 bool prefault_pages) {
  const uint8_t* p = file->bytes(info);
  if (info.dtype != DType::F32 || reinterpret_cast<uintptr_t>(p) % alignof(float) != 0) return file->read_f32(info);
  if (prefault_pages) prefault_mapped(p, info.end - info.begin);
  float* data = const_cast<float*>(reinterpret_cast<const float*>(p));  // copy-on-write mapping, see the constructor
  // A copy of `info`: it may describe a part of a stored tensor (WeightStore::add_rows), not one of the header's.
  return Tensor::view(info.shape, std::shared_ptr<float>(data, [file, info](float*) { file->release_pages(info); }));
}

void SafetensorsFile::release_pages(const TensorInfo& info) const {
  // Once a tensor is converted its file pages are not needed: without this they stay resident in the
  // mapping and the weights count twice in the process's memory.
  drop_mapped(bytes(info), info.end - info.begin);
}

std::vector<int64_t> SafetensorsFile::read_i64(const std::string& name) const {
  const TensorInfo* info = find(name);
  if (!info) throw ModelError(path_ + ": no tensor named '" + name + "'");
  const size_t n = static_cast<size_t>(shape_numel(info->shape));
  std::vector<int64_t> out(n);
  const uint8_t* p = bytes(*info);
  if (info->dtype == DType::I64) {
    if (n) std::memcpy(out.data(), p, n * 8);
  } else if (info->dtype == DType::I32) {
    for (size_t i = 0; i < n; ++i) {
      int32_t v;
      std::memcpy(&v, p + 4 * i, 4);
      out[i] = v;
    }
  } else {
    throw ModelError(path_ + ": tensor '" + name + "' is " + dtype_name(info->dtype) + ", expected an integer type");
  }
  return out;
}

void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    const uint64_t bytes = static_cast<uint64_t>(t.numel()) * 4;
    header[name] = {{"dtype", "F32"}, {"shape", t.shape()}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string h = header.dump();
  h.append((8 - h.size() % 8) % 8, ' ');
  std::ofstream f(path, std::ios::binary);
  if (!f) throw IoError("cannot write " + path);
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(static_cast<uint64_t>(h.size()) >> (8 * i));
  f.write(reinterpret_cast<const char*>(len), 8);
  f.write(h.data(), static_cast<std::streamsize>(h.size()));
  for (const auto& [name, t] : tensors)
    f.write(reinterpret_cast<const char*>(t.data()), static_cast<std::streamsize>(t.numel() * 4));
  if (!f) throw IoError("error writing " + path);
}

}  // namespace sdcpu
