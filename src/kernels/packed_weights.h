// A layer's weight in the layout(s) its oneDNN primitives asked for (format_tag::any), each reordered once from
// the checkpoint's values and kept in a buffer of ours (core/memory.h: huge pages, so packing 1.7 GB of weights
// does not page-fault 4 KiB at a time), or taken as it is from an on-disk cache of packed weights
// (kernels/packed_weight_cache.h). Shared by PreparedConv2d and PreparedLinear. Not thread-safe by itself: its
// owners call it under their own mutex.
#pragma once
#include <dnnl.hpp>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace sdcpu {

class PackedWeightCache;

// Where a layer's weight comes from: its shape, a way to read its values, and optionally a cache that may hold
// it packed already, under `name`.
struct WeightSource {
  Shape shape;                               // of the plain weight, as the checkpoint stores it
  std::function<Tensor()> read;              // its fp32 values; not called when the cache has the packed weight
  std::shared_ptr<PackedWeightCache> cache;  // may be null
  std::string name;                          // its key in the cache ("down_blocks.0.resnets.0.conv1.weight")
  // A plain tensor already in memory, no cache.
  static WeightSource of(const Tensor& weight) {
    return {weight.shape(), [weight] { return weight; }, nullptr, ""};
  }
};

class PackedWeights {
 public:
  // Packs the weight into `desc`, its first layout: takes the cache's copy when it has one in that layout, else
  // reads `source` (whose values oneDNN sees as `plain`, a descriptor without data) and reorders it, and
  // records the result in the cache, if any (which, while streaming a new cache file, takes the bytes and leaves
  // this object empty: see PackedWeightCache::record).
  void pack(const WeightSource& source, const dnnl::memory::desc& plain, const dnnl::memory::desc& desc);
  // The same for products with int8 activations (ComputeType::int8, kernels/quantize.h): the weight quantized
  // symmetrically, one scale per output channel, into `desc` (an s8 layout). `out_dim` is the dimension of
  // `plain` and `desc` that holds the output channels (0 for a convolution's OIhw, 1 for a matmul's [K, N]); the
  // values `source` reads are in PyTorch's layout, output channels first. Returns the scales: weight[o, ...] is
  // about scales[o] * packed[o, ...]. A cache keeps the scales beside the weight, under int8_scales_name().
  std::vector<float> pack_int8(const WeightSource& source, const dnnl::memory::desc& plain,
                               const dnnl::memory::desc& desc, int out_dim);
  static std::string int8_scales_name(const std::string& weight_name) { return weight_name + ":int8_scales"; }
  // The weight in layout `desc`: the existing copy, or a new one reordered from the first. Pointers stay valid
  // as long as this object.
  const dnnl::memory* in(const dnnl::memory::desc& desc);
  bool empty() const { return copies_.empty(); }
  // The layout of the first copy (the one pack() made). An int8 weight has only this one: oneDNN cannot reorder
  // from an s8 layout that carries its compensation, so int8 primitives are created for this layout.
  dnnl::memory::desc packed_desc() const;

 private:
  struct Copy;
  const dnnl::memory* add(const dnnl::memory& from, const dnnl::memory::desc& desc,
                          const dnnl::primitive_attr& attr = dnnl::primitive_attr());
  // Takes the cache's copy of `desc` for `source`, if it has one.
  bool take_cached(const WeightSource& source, const dnnl::memory::desc& desc);
  // Hands the packed copy to the cache, if any (see pack).
  void record(const WeightSource& source);
  std::vector<std::shared_ptr<Copy>> copies_;
};

}  // namespace sdcpu
