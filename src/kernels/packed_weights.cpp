#include "kernels/packed_weights.h"

#include <algorithm>
#include <stdexcept>

#include "core/error.h"
#include "core/memory.h"
#include "kernels/dnnl_context.h"
#include "kernels/packed_weight_cache.h"
#include "kernels/quantize.h"

namespace sdcpu {

struct PackedWeights::Copy {
  std::unique_ptr<SlabBuffer> buffer;        // ours, or
  std::shared_ptr<PackedWeightCache> cache;  // the mapped cache file the bytes are in (attached to it)
  dnnl::memory mem;
  ~Copy() {
    if (cache) cache->detach(&mem);
  }
};

const dnnl::memory* PackedWeights::add(const dnnl::memory& from, const dnnl::memory::desc& desc,
                                       const dnnl::primitive_attr& attr) {
  auto copy = std::make_shared<Copy>();
  copy->buffer = std::make_unique<SlabBuffer>(desc.get_size());
  copy->mem = dnnl::memory(desc, dnnl_engine(), copy->buffer->data());
  dnnl::reorder(dnnl::reorder::primitive_desc(from, copy->mem, attr))
      .execute(dnnl_stream(), const_cast<dnnl::memory&>(from), copy->mem);
  dnnl_stream().wait();
  copies_.push_back(std::move(copy));
  return &copies_.back()->mem;
}

bool PackedWeights::take_cached(const WeightSource& source, const dnnl::memory::desc& desc) {
  const void* cached = source.cache ? source.cache->find(source.name, desc) : nullptr;
  if (!cached) return false;
  auto copy = std::make_shared<Copy>();
  copy->cache = source.cache;
  // oneDNN takes a non-const handle but only reads weights; the mapping is read-only.
  copy->mem = dnnl::memory(desc, dnnl_engine(), const_cast<void*>(cached));
  source.cache->attach(&copy->mem);
  copies_.push_back(std::move(copy));
  return true;
}

void PackedWeights::record(const WeightSource& source) {
  // While the cache streams a new file (a first start) it has written the bytes: this network is only being
  // built to write it, and holding its packed weights would double the memory the load needs.
  if (source.cache && source.cache->record(source.name, copies_.front()->mem, copies_.front())) copies_.clear();
}

namespace {

Tensor read_checked(const WeightSource& source) {
  Tensor values = source.read();
  if (values.shape() != source.shape)
    throw InvalidArgument("packed weight '" + source.name + "': read " + shape_to_string(values.shape()) +
                          ", expected " + shape_to_string(source.shape));
  return values;
}

}  // namespace

void PackedWeights::pack(const WeightSource& source, const dnnl::memory::desc& plain, const dnnl::memory::desc& desc) {
  copies_.clear();
  if (take_cached(source, desc)) return;
  const Tensor values = read_checked(source);
  add(dnnl::memory(plain, dnnl_engine(), const_cast<float*>(values.data())), desc);
  record(source);
}

std::vector<float> PackedWeights::pack_int8(const WeightSource& source, const dnnl::memory::desc& plain,
                                            const dnnl::memory::desc& desc, int out_dim) {
  copies_.clear();
  const int64_t out = source.shape.at(0);
  const dnnl::memory::desc scales_desc({out}, dnnl::memory::data_type::f32, dnnl::memory::format_tag::a);
  const std::string scales_name = int8_scales_name(source.name);
  // The scales first: a file that has them has the weight they belong to (both are written together).
  const void* cached_scales = source.cache ? source.cache->find(scales_name, scales_desc) : nullptr;
  if (cached_scales) {
    const auto* s = static_cast<const float*>(cached_scales);
    std::vector<float> scales(s, s + out);
    if (take_cached(source, desc)) return scales;
  }
  const Tensor values = read_checked(source);
  std::vector<float> scales = int8_row_scales(values.data(), out, values.numel() / std::max<int64_t>(out, 1));
  // The reorder divides each output channel by its scale, rounds to nearest (ties to even) and saturates to s8.
  std::vector<float> inverse(scales.size());
  for (size_t i = 0; i < scales.size(); ++i) inverse[i] = 1.0f / scales[i];
  dnnl::primitive_attr attr;
  attr.set_output_scales(1 << out_dim, inverse);
  add(dnnl::memory(plain, dnnl_engine(), const_cast<float*>(values.data())), desc, attr);
  if (source.cache && !cached_scales) {
    auto kept = std::make_shared<std::vector<float>>(scales);
    const dnnl::memory scales_mem(scales_desc, dnnl_engine(), kept->data());
    source.cache->record(scales_name, scales_mem, kept);
  }
  record(source);
  return scales;
}

dnnl::memory::desc PackedWeights::packed_desc() const {
  if (copies_.empty())
    throw std::logic_error("a layer whose packed weight was streamed to the weight cache file cannot run");
  return copies_.front()->mem.get_desc();
}

const dnnl::memory* PackedWeights::in(const dnnl::memory::desc& desc) {
  if (copies_.empty())
    throw std::logic_error("a layer whose packed weight was streamed to the weight cache file cannot run");
  for (const auto& c : copies_)
    if (c->mem.get_desc() == desc) return &c->mem;
  return add(copies_.front()->mem, desc);
}

}  // namespace sdcpu
