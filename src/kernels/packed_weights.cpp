#include "kernels/packed_weights.h"

#include <stdexcept>

#include "core/error.h"
#include "core/memory.h"
#include "kernels/dnnl_context.h"
#include "kernels/packed_weight_cache.h"

namespace sdcpu {

struct PackedWeights::Copy {
  std::unique_ptr<SlabBuffer> buffer;        // ours, or
  std::shared_ptr<PackedWeightCache> cache;  // the mapped cache file the bytes are in (attached to it)
  dnnl::memory mem;
  ~Copy() {
    if (cache) cache->detach(&mem);
  }
};

const dnnl::memory* PackedWeights::add(const dnnl::memory& from, const dnnl::memory::desc& desc) {
  auto copy = std::make_shared<Copy>();
  copy->buffer = std::make_unique<SlabBuffer>(desc.get_size());
  copy->mem = dnnl::memory(desc, dnnl_engine(), copy->buffer->data());
  dnnl::reorder(from, copy->mem).execute(dnnl_stream(), const_cast<dnnl::memory&>(from), copy->mem);
  dnnl_stream().wait();
  copies_.push_back(std::move(copy));
  return &copies_.back()->mem;
}

void PackedWeights::pack(const WeightSource& source, const dnnl::memory::desc& plain, const dnnl::memory::desc& desc) {
  copies_.clear();
  if (source.cache) {
    if (const void* cached = source.cache->find(source.name, desc)) {
      auto copy = std::make_shared<Copy>();
      copy->cache = source.cache;
      // oneDNN takes a non-const handle but only reads weights; the mapping is read-only.
      copy->mem = dnnl::memory(desc, dnnl_engine(), const_cast<void*>(cached));
      source.cache->attach(&copy->mem);
      copies_.push_back(std::move(copy));
      return;
    }
  }
  const Tensor values = source.read();
  if (values.shape() != source.shape)
    throw InvalidArgument("packed weight '" + source.name + "': read " + shape_to_string(values.shape()) +
                          ", expected " + shape_to_string(source.shape));
  add(dnnl::memory(plain, dnnl_engine(), const_cast<float*>(values.data())), desc);
  // While the cache streams a new file (a first start) it has written the bytes: this network is only being
  // built to write it, and holding its packed weights would double the memory the load needs.
  if (source.cache && source.cache->record(source.name, copies_.front()->mem, copies_.front())) copies_.clear();
}

const dnnl::memory* PackedWeights::in(const dnnl::memory::desc& desc) {
  if (copies_.empty())
    throw std::logic_error("a layer whose packed weight was streamed to the weight cache file cannot run");
  for (const auto& c : copies_)
    if (c->mem.get_desc() == desc) return &c->mem;
  return add(copies_.front()->mem, desc);
}

}  // namespace sdcpu
