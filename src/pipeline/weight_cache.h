// Where the pipeline keeps the prepacked weights of each network on disk, and how it decides whether a cache file
// fits the model it opened (kernels/packed_weight_cache.h has the file itself).
//
// One file per network and precision: <dir>/<component>-<precision>-<hash>.sdcw, e.g.
// unet-bf16-3f2a9c0d1e2b4a5f.sdcw. The hash is of the fingerprint, which names everything the packed bytes depend
// on: the cache format, oneDNN's version and the CPU ISA it dispatches to, the network, the precision, and each
// weight file's path, size, inode and modification time. A model file that changes, or another oneDNN, gives a
// new name, so an old file is never trusted; each layer's layout is checked on top of that when it is looked up.
#pragma once
#include <memory>
#include <string>

#include "core/compute_type.h"
#include "formats/weight_store.h"
#include "kernels/packed_weight_cache.h"

namespace sdcpu {

std::string weight_cache_fingerprint(const WeightStore& store, ComputeType compute);
// The file for `store`'s network in `dir`, named by `fingerprint` (weight_cache_fingerprint of the same store).
std::string weight_cache_path(const std::string& dir, const WeightStore& store, ComputeType compute,
                              const std::string& fingerprint);

// What happened to one network's cache file when the pipeline was built.
struct WeightCacheStatus {
  std::string component;
  std::string path;
  // "loaded" (every weight came from the file), "written" (packed from the checkpoint and saved; the network was
  // then built from the file), or "not written: <reason>" (the network keeps its own packed weights).
  std::string outcome;
  std::string previous_state;  // the file's state before: missing, stale, damaged: ..., valid
};

// Saves `cache` (written = true) or, when the disk refuses, says why in `status` and returns false.
bool save_weight_cache(const PackedWeightCache& cache, WeightCacheStatus& status);

// Builds `Net(config, store)` with its packed weights from the cache file in `dir` (created when it is missing,
// stale, damaged or incomplete). `cache` receives the open cache the network's weights live in (null when they
// are the network's own), `status` what happened. With `dir` empty: just the network.
template <typename Net, typename Config>
Net build_with_weight_cache(const Config& config, WeightStore& store, ComputeType compute, const std::string& dir,
                            std::shared_ptr<PackedWeightCache>& cache, WeightCacheStatus& status) {
  cache = nullptr;
  if (dir.empty()) return Net(config, store);
  status.component = store.component();
  const std::string fingerprint = weight_cache_fingerprint(store, compute);
  status.path = weight_cache_path(dir, store, compute, fingerprint);
  {
    auto first = std::make_shared<PackedWeightCache>(status.path, fingerprint);
    status.previous_state = first->state();
    store.set_pack_cache(first);
    Net net(config, store);
    store.set_pack_cache(nullptr);
    if (first->complete()) {
      status.outcome = "loaded";
      cache = std::move(first);
      return net;
    }
    if (!save_weight_cache(*first, status)) return net;
  }  // the network packed from the checkpoint is freed before the one mapped from the file is built
  cache = std::make_shared<PackedWeightCache>(status.path, fingerprint);
  store.set_pack_cache(cache);
  Net net(config, store);
  store.set_pack_cache(nullptr);
  if (!cache->complete()) status.outcome += " (" + std::to_string(cache->misses()) + " weights not found again)";
  return net;
}

}  // namespace sdcpu
