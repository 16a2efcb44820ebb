// libFuzzer target: the safetensors header parser must reject every malformed input with a
// ModelError, never crash, hang or allocate without bound.
#include <cstddef>
#include <cstdint>

#include "core/error.h"
#include "formats/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    sdcpu::SafetensorsHeader h = sdcpu::parse_safetensors_header(data, size);
    // A header that passed validation must describe tensors inside the input.
    const uint64_t data_size = size - 8 - h.header_size;
    for (const auto& t : h.tensors)
      if (t.end > data_size || t.begin > t.end) __builtin_trap();
  } catch (const sdcpu::ModelError&) {
  }
  return 0;
}
