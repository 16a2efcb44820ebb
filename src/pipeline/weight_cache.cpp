#include "pipeline/weight_cache.h"

#include <sys/stat.h>

#include <cstdio>
#include <dnnl.hpp>
#include <filesystem>

#include "core/error.h"

namespace sdcpu {
namespace {

// 64-bit FNV-1a: a file name, not a security boundary (the whole fingerprint is stored and compared).
uint64_t fnv1a(const std::string& s) {
  uint64_t h = 14695981039346656037ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

std::string file_identity(const std::string& path) {
  std::error_code ec;
  const std::string absolute = std::filesystem::absolute(path, ec).string();
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) throw IoError("cannot stat " + path);
  return (ec ? path : absolute) + " size=" + std::to_string(st.st_size) + " dev=" + std::to_string(st.st_dev) +
         " ino=" + std::to_string(st.st_ino) + " mtime=" + std::to_string(st.st_mtim.tv_sec) + "." +
         std::to_string(st.st_mtim.tv_nsec);
}

}  // namespace

std::string weight_cache_fingerprint(const WeightStore& store, ComputeType compute) {
  const dnnl_version_t* v = dnnl_version();
  std::string fp = "sdcpu packed weights 1\n";
  fp += "onednn " + std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch) + " " +
        v->hash + " isa " + std::to_string(static_cast<int>(dnnl::get_effective_cpu_isa())) + "\n";
  fp += "component " + store.component() + "\nprecision " + compute_type_name(compute) + "\n";
  for (const std::string& f : store.files()) fp += "file " + file_identity(f) + "\n";
  return fp;
}

std::string weight_cache_path(const std::string& dir, const WeightStore& store, ComputeType compute,
                              const std::string& fingerprint) {
  char hash[17];
  std::snprintf(hash, sizeof(hash), "%016llx", static_cast<unsigned long long>(fnv1a(fingerprint)));
  return (std::filesystem::path(dir) / (store.component() + "-" + compute_type_name(compute) + "-" + hash + ".sdcw"))
      .string();
}

bool save_weight_cache(const PackedWeightCache& cache, WeightCacheStatus& status) {
  try {
    std::error_code ec;
    std::filesystem::create_directories(std::filesystem::path(cache.path()).parent_path(), ec);
    if (ec)
      throw IoError("cannot create " + std::filesystem::path(cache.path()).parent_path().string() + ": " +
                    ec.message());
    cache.save();
    status.outcome = "written";
    return true;
  } catch (const IoError& e) {
    status.outcome = std::string("not written: ") + e.what();
    return false;
  }
}

}  // namespace sdcpu
