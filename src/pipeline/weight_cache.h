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
#include <optional>
#include <string>

#include "core/compute_type.h"
#include "core/memory.h"
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

// Every name an entry of `store`'s cache file may have: its weights' and, in int8, their scales'.
std::vector<std::string> packed_weight_names(const WeightStore& store);

// Creates `dir` (and its parents) for a cache file; when it cannot, says why in `status` and returns false.
bool prepare_weight_cache_dir(const std::string& dir, WeightCacheStatus& status);
// Saves `cache` (written = true) or, when the disk refuses, says why in `status` and returns false.
bool save_weight_cache(PackedWeightCache& cache, WeightCacheStatus& status);

// Builds `Net(config, store)` with its packed weights from the cache file in `dir` (created when it is missing,
// stale, damaged or incomplete). `cache` receives the open cache the network's weights live in (null when they
// are the network's own), `status` what happened. With `dir` empty: just the network.
//
// A file to write is streamed (PackedWeightCache::stream_misses): the first network is built only to write it,
// each weight going to the file as it is packed and leaving memory at once (and the checkpoint's pages it was
// read from, SafetensorsFile::view_f32), so the first start needs no more memory than the later ones; the network
// that runs is then built from the finished file. When the file cannot be written the network packs its own
// weights, as without a cache.
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
    const bool can_write = prepare_weight_cache_dir(dir, status);
    if (!can_write && !first->valid()) return Net(config, store);
    if (can_write) first->stream_misses(packed_weight_names(store));
    store.set_pack_cache(first);
    std::optional<Net> net(std::in_place, config, store);
    store.set_pack_cache(nullptr);
    if (first->complete()) {
      status.outcome = "loaded";
      cache = std::move(first);
      return std::move(*net);
    }
    if (!can_write || !save_weight_cache(*first, status)) {
      if (!first->dropped_weights()) return std::move(*net);
      // Some weights went only to the file that could not be finished: pack them again, without a cache.
      net.reset();
      first.reset();
      release_free_memory();
      return Net(config, store);
    }
  }  // the network built to write the file is freed before the one mapped from it is built
  release_free_memory();
  cache = std::make_shared<PackedWeightCache>(status.path, fingerprint);
  store.set_pack_cache(cache);
  Net net(config, store);
  store.set_pack_cache(nullptr);
  if (!cache->complete()) status.outcome += " (" + std::to_string(cache->misses()) + " weights not found again)";
  return net;
}

}  // namespace sdcpu
