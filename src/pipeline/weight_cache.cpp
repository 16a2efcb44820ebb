#include "pipeline/weight_cache.h"

#include <sys/stat.h>

#include <cstdio>
#include <cstdlib>
#include <dnnl.hpp>
#include <filesystem>

#include "core/error.h"
#include "kernels/packed_weights.h"
#include "sdcpu/sdcpu.h"

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

std::vector<std::string> packed_weight_names(const WeightStore& store) {
  std::vector<std::string> names = store.names();
  if (store.compute_type() == ComputeType::int8) {
    const size_t weights = names.size();
    for (size_t i = 0; i < weights; ++i) names.push_back(PackedWeights::int8_scales_name(names[i]));
  }
  return names;
}

std::string default_weight_cache_dir() {
  if (const char* dir = std::getenv("SDCPU_WEIGHT_CACHE")) return dir;  // set but empty: no cache
  const char* xdg = std::getenv("XDG_CACHE_HOME");
  if (xdg && xdg[0] == '/') return (std::filesystem::path(xdg) / "sdcpu" / "weights").string();
  const char* home = std::getenv("HOME");
  if (home && home[0] != '\0') return (std::filesystem::path(home) / ".cache" / "sdcpu" / "weights").string();
  return "";
}

bool prepare_weight_cache_dir(const std::string& dir, WeightCacheStatus& status) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (!ec) return true;
  status.outcome = "not written: cannot create " + dir + ": " + ec.message();
  return false;
}

bool save_weight_cache(PackedWeightCache& cache, WeightCacheStatus& status) {
  try {
    cache.save();
    status.outcome = "written";
    return true;
  } catch (const IoError& e) {
    status.outcome = std::string("not written: ") + e.what();
    return false;
  }
}

}  // namespace sdcpu
