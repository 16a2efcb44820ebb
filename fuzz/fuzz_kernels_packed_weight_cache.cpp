// libFuzzer target: the weight cache index parser (kernels/packed_weight_cache.h) must reject every malformed
// file with a ModelError, never crash, hang or allocate without bound; what it accepts must lie inside the input.
#include <cstddef>
#include <cstdint>

#include "core/error.h"
#include "kernels/packed_weight_cache.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const sdcpu::PackedWeightIndex index = sdcpu::parse_packed_weight_index(data, size);
    if (index.data_offset > size) __builtin_trap();
    for (const auto& e : index.entries)
      if (e.offset > size - index.data_offset || e.bytes > size - index.data_offset - e.offset) __builtin_trap();
  } catch (const sdcpu::ModelError&) {
  }
  return 0;
}
