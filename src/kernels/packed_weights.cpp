#include "kernels/packed_weights.h"

#include "core/memory.h"
#include "kernels/dnnl_context.h"

namespace sdcpu {

struct PackedWeights::Copy {
  SlabBuffer buffer;
  dnnl::memory mem;
  explicit Copy(size_t bytes) : buffer(bytes) {}
};

const dnnl::memory* PackedWeights::add(const dnnl::memory& from, const dnnl::memory::desc& desc) {
  auto copy = std::make_shared<Copy>(desc.get_size());
  copy->mem = dnnl::memory(desc, dnnl_engine(), copy->buffer.data());
  dnnl::reorder(from, copy->mem).execute(dnnl_stream(), const_cast<dnnl::memory&>(from), copy->mem);
  dnnl_stream().wait();
  copies_.push_back(std::move(copy));
  return &copies_.back()->mem;
}

void PackedWeights::pack(const dnnl::memory& plain, const dnnl::memory::desc& desc) {
  copies_.clear();
  add(plain, desc);
}

const dnnl::memory* PackedWeights::in(const dnnl::memory::desc& desc) {
  for (const auto& c : copies_)
    if (c->mem.get_desc() == desc) return &c->mem;
  return add(copies_.front()->mem, desc);
}

}  // namespace sdcpu
