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
#include "kernels/packed_weight_file.h"

namespace sdcpu {

using namespace packed_weight_file;

namespace {

// Bounds that keep a damaged index from asking for absurd allocations: SD's UNet has about 700 packed weights.
constexpr uint32_t kMaxEntries = 1u << 16;
constexpr uint32_t kMaxNameBytes = 1024;

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

std::vector<uint8_t> desc_bytes(const dnnl::memory::desc& desc) {
  const auto* p = reinterpret_cast<const uint8_t*>(&desc.data);
  return {p, p + sizeof(desc.data)};
}

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
    const void* at = data() + e.offset;
    ++asked_total_;
    if (!writer_ || !stream_write(name, desc, at)) asked_.push_back({name, at, desc, nullptr});
    return at;
  }
  ++misses_;
  return nullptr;
}

bool PackedWeightCache::record(const std::string& name, const dnnl::memory& packed, std::shared_ptr<const void> keep) {
  ++asked_total_;
  if (stream_ && !writer_ && write_error_.empty()) start_streaming();
  if (writer_ && stream_write(name, packed.get_desc(), packed.get_data_handle())) {
    dropped_weights_ = true;
    return true;
  }
  asked_.push_back({name, packed.get_data_handle(), packed.get_desc(), std::move(keep)});
  return false;
}

void PackedWeightCache::stream_misses(const std::vector<std::string>& names) {
  stream_index_bytes_ = 0;
  for (const std::string& n : names) stream_index_bytes_ += index_entry_bytes(n);
  stream_ = true;
}

bool PackedWeightCache::inside_mapping(const void* p) const {
  const auto* b = static_cast<const uint8_t*>(p);
  const auto* base = static_cast<const uint8_t*>(map_);
  return map_ && b >= base && b < base + map_size_;
}

void PackedWeightCache::start_streaming() {
  try {
    writer_ = std::make_unique<PackedWeightFileWriter>(path_, fingerprint_, stream_index_bytes_);
    // What was found in the old file before the first miss goes first, in the order it was asked for.
    for (const Asked& a : asked_) {
      writer_->add(a.name, a.desc, a.data);
      if (inside_mapping(a.data)) drop_mapped(a.data, a.desc.get_size());
    }
    asked_.clear();
  } catch (const IoError& e) {
    write_error_ = e.what();
    writer_.reset();  // removes the temporary file
  }
}

bool PackedWeightCache::stream_write(const std::string& name, const dnnl::memory::desc& desc, const void* bytes) {
  try {
    writer_->add(name, desc, bytes);
    // A weight found in the old file was read to be copied: its pages leave the process again.
    if (inside_mapping(bytes)) drop_mapped(bytes, desc.get_size());
    return true;
  } catch (const IoError& e) {
    write_error_ = e.what();
    writer_.reset();
    return false;
  }
}

void PackedWeightCache::save() {
  if (writer_) {
    const std::unique_ptr<PackedWeightFileWriter> writer = std::move(writer_);
    writer->commit();
    return;
  }
  if (!write_error_.empty()) throw IoError(write_error_);
  uint64_t index_bytes = 0;
  for (const Asked& a : asked_) index_bytes += index_entry_bytes(a.name);
  PackedWeightFileWriter out(path_, fingerprint_, index_bytes);
  for (const Asked& a : asked_) out.add(a.name, a.desc, a.data);  // a weight asked for in two layouts keeps its first
  out.commit();
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
    copy_arena_->release_front(copy_);
  else
    free_buffer(copy_);
  copy_ = nullptr;
}

PackedWeightCache::Use::Use(PackedWeightCache* cache) : cache_(cache) {
  if (!cache_ || !cache_->map_) return;
  std::lock_guard<std::mutex> lock(cache_->use_mutex_);
  if (cache_->users_++ > 0) return;
  if (cache_->copy_in_) {
    cache_->copy_in();
  } else if (!cache_->mapped_) {
    cache_->prefault_pages();
    cache_->mapped_ = cache_->keep_mapped_;
  }
}

PackedWeightCache::Use::~Use() {
  if (!cache_ || !cache_->map_) return;
  std::lock_guard<std::mutex> lock(cache_->use_mutex_);
  if (--cache_->users_ > 0) return;
  if (cache_->copy_) cache_->copy_out();
  if (!cache_->mapped_) cache_->release_pages();
}

}  // namespace sdcpu
