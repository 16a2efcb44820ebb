#include "kernels/packed_weight_file.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <utility>

#include "core/error.h"

namespace sdcpu {

using namespace packed_weight_file;

namespace {

uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

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

// Removes "<path>.tmp.<pid>" files whose process is gone (a writer killed before its commit or destructor).
void remove_abandoned_temporaries(const std::string& path) {
  namespace fs = std::filesystem;
  const fs::path target(path);
  const std::string prefix = target.filename().string() + ".tmp.";
  std::error_code ec;
  for (fs::directory_iterator it(target.parent_path().empty() ? fs::path(".") : target.parent_path(), ec), end;
       !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.rfind(prefix, 0) != 0) continue;
    const std::string pid_text = name.substr(prefix.size());
    const auto digit = [](char c) { return c >= '0' && c <= '9'; };
    if (pid_text.empty() || pid_text.size() > 9 || !std::all_of(pid_text.begin(), pid_text.end(), digit)) continue;
    const pid_t pid = static_cast<pid_t>(std::stol(pid_text));
    if (pid != ::getpid() && ::kill(pid, 0) != 0 && errno == ESRCH) ::unlink(it->path().c_str());
  }
}

}  // namespace

uint64_t packed_weight_file::index_entry_bytes(const std::string& name) {
  return 4 + name.size() + 4 + sizeof(dnnl_memory_desc_t) + 8 + 8;
}

// Writes the file front to back in whole 32 MiB chunks (gaps are zeros). Why not one write per weight: the page
// cache sizes its folios by the writes that create them, and a write that starts or ends off a 2 MiB boundary
// leaves small folios there, which later map with 4 KiB pages instead of huge ones. Written per weight, a fifth
// of the UNet's file mapped that way and the fp32 UNet step ran 8-12% slower than on our own huge-page buffers.
class PackedWeightFileWriter::ChunkedWriter {
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

PackedWeightFileWriter::PackedWeightFileWriter(std::string path, std::string fingerprint, uint64_t max_index_bytes)
    : path_(std::move(path)),
      temp_(path_ + ".tmp." + std::to_string(::getpid())),
      fingerprint_(std::move(fingerprint)),
      data_offset_(align_up(kHeaderBytes + fingerprint_.size() + max_index_bytes, kDataAlign)),
      max_index_bytes_(max_index_bytes) {
  remove_abandoned_temporaries(path_);
  fd_ = ::open(temp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) throw IoError("cannot create " + temp_ + ": " + std::strerror(errno));
  out_ = std::make_unique<ChunkedWriter>(fd_, temp_);
}

PackedWeightFileWriter::~PackedWeightFileWriter() {
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(temp_.c_str());
  }
}

bool PackedWeightFileWriter::add(const std::string& name, const dnnl::memory::desc& desc, const void* data) {
  if (fd_ < 0) throw IoError("cannot write " + temp_ + ": already committed");
  if (names_.count(name)) return false;
  const uint64_t bytes = desc.get_size();
  if (index_.size() + index_entry_bytes(name) > max_index_bytes_)
    throw IoError("cannot write " + temp_ + ": the index outgrows the room reserved for it (weight '" + name + "')");
  out_->put(data_offset_ + data_bytes_, data, bytes);
  append(index_, static_cast<uint32_t>(name.size()));
  append_bytes(index_, name.data(), name.size());
  append(index_, static_cast<uint32_t>(sizeof(desc.data)));
  append_bytes(index_, &desc.data, sizeof(desc.data));
  append(index_, data_bytes_);
  append(index_, bytes);
  data_bytes_ = align_up(data_bytes_ + bytes, kEntryAlign);
  names_.insert(name);
  ++count_;
  return true;
}

void PackedWeightFileWriter::commit() {
  if (fd_ < 0) throw IoError("cannot write " + temp_ + ": already committed");
  const uint64_t file_bytes = data_offset_ + data_bytes_;
  std::vector<uint8_t> head;
  append_bytes(head, kMagic, sizeof(kMagic));
  append(head, kVersion);
  append(head, count_);
  append(head, static_cast<uint64_t>(fingerprint_.size()));
  append(head, static_cast<uint64_t>(index_.size()));
  append(head, data_offset_);
  append(head, file_bytes);
  head.resize(kHeaderBytes, 0);
  append_bytes(head, fingerprint_.data(), fingerprint_.size());
  append_bytes(head, index_.data(), index_.size());
  try {
    out_->flush();
    // The header last: until the data are all written the file does not even claim to be a cache.
    write_all(fd_, head.data(), head.size(), 0, temp_);
    if (::ftruncate(fd_, static_cast<off_t>(file_bytes)) != 0)
      throw IoError("cannot size " + temp_ + ": " + std::strerror(errno));
    // On disk before it is renamed into place: after a crash there is either no file or a whole one.
    if (::fdatasync(fd_) != 0) throw IoError("cannot sync " + temp_ + ": " + std::strerror(errno));
    const int fd = std::exchange(fd_, -1);
    if (::close(fd) != 0) {
      ::unlink(temp_.c_str());
      throw IoError("cannot close " + temp_ + ": " + std::strerror(errno));
    }
  } catch (...) {
    if (fd_ >= 0) ::close(std::exchange(fd_, -1));
    ::unlink(temp_.c_str());
    throw;
  }
  if (::rename(temp_.c_str(), path_.c_str()) != 0) {
    const std::string reason = std::strerror(errno);
    ::unlink(temp_.c_str());
    throw IoError("cannot rename " + temp_ + " to " + path_ + ": " + reason);
  }
}

}  // namespace sdcpu
