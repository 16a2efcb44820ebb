#include "kernels/packed_weight_cache.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <set>
#include <utility>

#include "core/error.h"
#include "core/memory.h"

namespace sdcpu {
namespace {

constexpr char kMagic[8] = {'S', 'D', 'C', 'P', 'U', 'P', 'W', '1'};
constexpr uint32_t kVersion = 1;
constexpr size_t kHeaderBytes = 64;
constexpr uint64_t kDataAlign = uint64_t{2} << 20;  // huge-page boundary
constexpr uint64_t kEntryAlign = 4096;
// Bounds that keep a damaged index from asking for absurd allocations: SD's UNet has about 700 packed weights.
constexpr uint32_t kMaxEntries = 1u << 16;
constexpr uint32_t kMaxNameBytes = 1024;

uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

// Bounds-checked little-endian reads over the file's bytes.
class Reader {
 public:
  Reader(const uint8_t* p, size_t size) : p_(p), size_(size) {}
  template <typename T>
  T read() {
    T v;
    std::memcpy(&v, take(sizeof(T)), sizeof(T));
    return v;
  }
  const uint8_t* take(uint64_t n) {
    if (n > size_ - pos_) throw ModelError("truncated (needs " + std::to_string(pos_ + n) + " bytes)");
    const uint8_t* q = p_ + pos_;
    pos_ += n;
    return q;
  }
  size_t pos() const { return pos_; }

 private:
  const uint8_t* p_;
  size_t size_, pos_ = 0;
};

void append_bytes(std::vector<uint8_t>& out, const void* p, size_t n) {
  if (n == 0) return;
  const size_t at = out.size();
  out.resize(at + n);
  std::memcpy(out.data() + at, p, n);
}

template <typename T>
void append(std::vector<uint8_t>& out, T v) {
  append_bytes(out, &v, sizeof(T));
}

std::vector<uint8_t> desc_bytes(const dnnl::memory::desc& desc) {
  std::vector<uint8_t> out;
  append_bytes(out, &desc.data, sizeof(desc.data));
  return out;
}

void write_all(int fd, const uint8_t* b, size_t n, uint64_t offset, const std::string& path) {
  while (n > 0) {
    const ssize_t w = ::pwrite(fd, b, n, static_cast<off_t>(offset));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) throw IoError("cannot write " + path + ": " + std::strerror(errno));
    b += w;
    n -= static_cast<size_t>(w);
    offset += static_cast<uint64_t>(w);
  }
}

// Writes a file front to back in whole 32 MiB chunks (gaps are zeros). Why not one write per weight: the page
// cache sizes its folios by the writes that create them, and a write that starts or ends off a 2 MiB boundary
// leaves small folios there, which later map with 4 KiB pages instead of huge ones. Written per weight, a fifth
// of the UNet's file mapped that way and the fp32 UNet step ran 8-12% slower than on our own huge-page buffers.
class ChunkedWriter {
 public:
  ChunkedWriter(int fd, std::string path) : fd_(fd), path_(std::move(path)), chunk_(kChunk) {}
  // `at` must not go backwards.
  void put(uint64_t at, const void* data, size_t n) {
    const auto* p = static_cast<const uint8_t*>(data);
    while (n > 0) {
      if (at >= base_ + kChunk) {
        flush();
        base_ = at / kChunk * kChunk;
      }
      const size_t into = static_cast<size_t>(at - base_), take = std::min<size_t>(n, kChunk - into);
      std::memcpy(chunk_.data() + into, p, take);
      used_ = std::max(used_, into + take);
      at += take;
      p += take;
      n -= take;
    }
  }
  void flush() {
    if (used_ > 0) write_all(fd_, chunk_.data(), used_, base_, path_);
    std::fill(chunk_.begin(), chunk_.begin() + static_cast<std::ptrdiff_t>(used_), 0);
    used_ = 0;
  }

 private:
  static constexpr size_t kChunk = size_t{32} << 20;
  int fd_;
  std::string path_;
  std::vector<uint8_t> chunk_;
  uint64_t base_ = 0;
  size_t used_ = 0;
};

}  // namespace

PackedWeightIndex parse_packed_weight_index(const uint8_t* bytes, size_t size) {
  Reader r(bytes, size);
  if (std::memcmp(r.take(sizeof(kMagic)), kMagic, sizeof(kMagic)) != 0) throw ModelError("not an sdcpu weight cache");
  const auto version = r.read<uint32_t>();
  if (version != kVersion) throw ModelError("format version " + std::to_string(version) + ", expected 1");
  const auto count = r.read<uint32_t>();
  const auto fingerprint_bytes = r.read<uint64_t>();
  const auto index_bytes = r.read<uint64_t>();
  PackedWeightIndex index;
  index.data_offset = r.read<uint64_t>();
  const auto file_bytes = r.read<uint64_t>();
  r.take(kHeaderBytes - r.pos());
  if (file_bytes != size)
    throw ModelError("size " + std::to_string(size) + ", header says " + std::to_string(file_bytes));
  if (count > kMaxEntries) throw ModelError("too many entries (" + std::to_string(count) + ")");
  if (fingerprint_bytes > size || index_bytes > size || index.data_offset > size ||
      kHeaderBytes + fingerprint_bytes + index_bytes > index.data_offset || index.data_offset % kDataAlign != 0)
    throw ModelError("header sizes do not fit the file");
  const uint8_t* fp = r.take(fingerprint_bytes);
  index.fingerprint.assign(reinterpret_cast<const char*>(fp), fingerprint_bytes);

  Reader ix(r.take(index_bytes), index_bytes);
  const uint64_t data_bytes = size - index.data_offset;
  std::set<std::string> names;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (uint32_t i = 0; i < count; ++i) {
    PackedWeightEntry e;
    const auto name_bytes = ix.read<uint32_t>();
    if (name_bytes == 0 || name_bytes > kMaxNameBytes) throw ModelError("entry " + std::to_string(i) + ": bad name");
    const uint8_t* name = ix.take(name_bytes);
    e.name.assign(reinterpret_cast<const char*>(name), name_bytes);
    const auto desc_size = ix.read<uint32_t>();
    if (desc_size != sizeof(dnnl_memory_desc_t))
      throw ModelError("entry '" + e.name + "': descriptor of " + std::to_string(desc_size) + " bytes, expected " +
                       std::to_string(sizeof(dnnl_memory_desc_t)));
    const uint8_t* desc = ix.take(desc_size);
    e.desc.assign(desc, desc + desc_size);
    e.offset = ix.read<uint64_t>();
    e.bytes = ix.read<uint64_t>();
    if (e.bytes == 0 || e.offset > data_bytes || e.bytes > data_bytes - e.offset || e.offset % kEntryAlign != 0)
      throw ModelError("entry '" + e.name + "': data outside the file");
    if (!names.insert(e.name).second) throw ModelError("entry '" + e.name + "' appears twice");
    ranges.emplace_back(e.offset, e.offset + e.bytes);
    index.entries.push_back(std::move(e));
  }
  if (ix.pos() != index_bytes) throw ModelError("index has trailing bytes");
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i)
    if (ranges[i].first < ranges[i - 1].second) throw ModelError("entries overlap");
  return index;
}

PackedWeightCache::PackedWeightCache(std::string path, std::string fingerprint)
    : path_(std::move(path)), fingerprint_(std::move(fingerprint)), state_("missing") {
  const int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno != ENOENT) state_ = std::string("damaged: cannot open: ") + std::strerror(errno);
    return;
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size < static_cast<off_t>(kHeaderBytes)) {
    ::close(fd);
    state_ = "damaged: not a regular file of at least a header";
    return;
  }
  map_size_ = static_cast<size_t>(st.st_size);
  // Read-only and private: oneDNN only reads weights, and pages dropped by release_pages() come back from the
  // page cache (or the file) when touched again.
  map_ = ::mmap(nullptr, map_size_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map_ == MAP_FAILED) {
    map_ = nullptr;
    state_ = std::string("damaged: cannot map: ") + std::strerror(errno);
    return;
  }
#ifdef MADV_HUGEPAGE
  ::madvise(map_, map_size_, MADV_HUGEPAGE);  // advisory: lets the page cache use huge folios where it can
#endif
  try {
    index_ = parse_packed_weight_index(static_cast<const uint8_t*>(map_), map_size_);
    if (index_.fingerprint != fingerprint_) {
      state_ = "stale";
    } else {
      state_ = "valid";
      return;
    }
  } catch (const ModelError& e) {
    state_ = std::string("damaged: ") + e.what();
  }
  ::munmap(map_, map_size_);
  map_ = nullptr;
  index_ = {};
}

PackedWeightCache::~PackedWeightCache() {
  free_copy();
  if (map_) ::munmap(map_, map_size_);
}

const void* PackedWeightCache::find(const std::string& name, const dnnl::memory::desc& desc) {
  const std::vector<uint8_t> wanted = desc_bytes(desc);
  for (const auto& e : index_.entries) {
    // Compared as bytes: a descriptor from the file is never interpreted, only matched against the one the
    // primitive asks for now (oneDNN zero-fills descriptors, so equal layouts have equal bytes).
    if (e.name != name || e.desc != wanted || e.bytes != desc.get_size()) continue;
    const void* data = static_cast<const uint8_t*>(map_) + index_.data_offset + e.offset;
    asked_.push_back({name, data, desc, nullptr});
    return data;
  }
  ++misses_;
  return nullptr;
}

void PackedWeightCache::record(const std::string& name, const dnnl::memory& packed, std::shared_ptr<const void> keep) {
  asked_.push_back({name, packed.get_data_handle(), packed.get_desc(), std::move(keep)});
}

void PackedWeightCache::save() const {
  // Layout first: each entry's offset, then the index that names them.
  std::vector<uint8_t> index;
  std::vector<uint64_t> offsets;
  uint64_t data_bytes = 0;
  std::set<std::string> names;
  std::vector<const Asked*> entries;
  for (const Asked& a : asked_) {
    if (!names.insert(a.name).second) continue;  // a weight asked for in two layouts keeps its first
    entries.push_back(&a);
    offsets.push_back(data_bytes);
    const uint64_t bytes = a.desc.get_size();
    append(index, static_cast<uint32_t>(a.name.size()));
    append_bytes(index, a.name.data(), a.name.size());
    append(index, static_cast<uint32_t>(sizeof(a.desc.data)));
    append_bytes(index, &a.desc.data, sizeof(a.desc.data));
    append(index, data_bytes);
    append(index, bytes);
    data_bytes = align_up(data_bytes + bytes, kEntryAlign);
  }
  const uint64_t data_offset = align_up(kHeaderBytes + fingerprint_.size() + index.size(), kDataAlign);
  const uint64_t file_bytes = data_offset + data_bytes;
  std::vector<uint8_t> head;
  append_bytes(head, kMagic, sizeof(kMagic));
  append(head, kVersion);
  append(head, static_cast<uint32_t>(entries.size()));
  append(head, static_cast<uint64_t>(fingerprint_.size()));
  append(head, static_cast<uint64_t>(index.size()));
  append(head, data_offset);
  append(head, file_bytes);
  head.resize(kHeaderBytes, 0);
  append_bytes(head, fingerprint_.data(), fingerprint_.size());
  append_bytes(head, index.data(), index.size());

  const std::string tmp = path_ + ".tmp." + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw IoError("cannot create " + tmp + ": " + std::strerror(errno));
  try {
    if (::ftruncate(fd, static_cast<off_t>(file_bytes)) != 0)
      throw IoError("cannot size " + tmp + ": " + std::strerror(errno));
    ChunkedWriter out(fd, tmp);
    out.put(0, head.data(), head.size());
    for (size_t i = 0; i < entries.size(); ++i)
      out.put(data_offset + offsets[i], entries[i]->data, entries[i]->desc.get_size());
    out.flush();
    // On disk before it is renamed into place: after a crash there is either no file or a whole one.
    if (::fdatasync(fd) != 0) throw IoError("cannot sync " + tmp + ": " + std::strerror(errno));
    if (::close(fd) != 0) throw IoError("cannot close " + tmp + ": " + std::strerror(errno));
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  if (::rename(tmp.c_str(), path_.c_str()) != 0) {
    const std::string reason = std::strerror(errno);
    ::unlink(tmp.c_str());
    throw IoError("cannot rename " + tmp + " to " + path_ + ": " + reason);
  }
}

void PackedWeightCache::prefault_pages() {
  if (map_) prefault_mapped(map_, map_size_);
}

void PackedWeightCache::release_pages() {
  if (map_) drop_mapped(map_, map_size_);
}

void PackedWeightCache::attach(dnnl::memory* mem) {
  std::lock_guard<std::mutex> lock(use_mutex_);
  const auto* p = static_cast<const uint8_t*>(mem->get_data_handle());
  attached_.push_back({mem, static_cast<size_t>(p - data())});
}

void PackedWeightCache::detach(dnnl::memory* mem) {
  std::lock_guard<std::mutex> lock(use_mutex_);
  std::erase_if(attached_, [mem](const Attached& a) { return a.mem == mem; });
}

void PackedWeightCache::copy_in() {
  const size_t bytes = map_size_ - index_.data_offset;
  copy_ = copy_arena_ ? copy_arena_->hold_front(bytes) : nullptr;
  copy_in_arena_ = copy_ != nullptr;
  if (!copy_) copy_ = allocate_buffer(bytes);
  const int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  size_t done = 0;
  // pread, not a copy from the mapping: that would map the file's pages into the process while the copy is made.
  while (fd >= 0 && done < bytes) {
    const ssize_t n =
        ::pread(fd, static_cast<uint8_t*>(copy_) + done, bytes - done, static_cast<off_t>(index_.data_offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    done += static_cast<size_t>(n);
  }
  if (fd >= 0) ::close(fd);
  if (done < bytes) {  // the file went away or shrank under us: stay on the mapping, which still holds the data
    free_copy();
    prefault_pages();
    return;
  }
  for (const Attached& a : attached_) a.mem->set_data_handle(static_cast<uint8_t*>(copy_) + a.offset);
}

void PackedWeightCache::copy_out() {
  for (const Attached& a : attached_) a.mem->set_data_handle(const_cast<uint8_t*>(data()) + a.offset);
  free_copy();
}

void PackedWeightCache::free_copy() {
  if (!copy_) return;
  if (copy_in_arena_)
    copy_arena_->release_front();
  else
    free_buffer(copy_);
  copy_ = nullptr;
}

PackedWeightCache::Use::Use(PackedWeightCache* cache) : cache_(cache) {
  if (!cache_ || !cache_->map_) return;
  std::lock_guard<std::mutex> lock(cache_->use_mutex_);
  if (cache_->users_++ > 0) return;
  if (cache_->copy_in_)
    cache_->copy_in();
  else
    cache_->prefault_pages();
}

PackedWeightCache::Use::~Use() {
  if (!cache_ || !cache_->map_) return;
  std::lock_guard<std::mutex> lock(cache_->use_mutex_);
  if (--cache_->users_ > 0) return;
  if (cache_->copy_) cache_->copy_out();
  cache_->release_pages();
}

}  // namespace sdcpu
