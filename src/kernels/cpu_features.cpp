#include "kernels/cpu_features.h"

#include <dnnl.hpp>

namespace sdcpu {

bool cpu_has_native_bf16() {
  using isa = dnnl::cpu_isa;
  switch (dnnl::get_effective_cpu_isa()) {
    case isa::avx512_core_bf16:
    case isa::avx512_core_amx:
      return true;
    default:
      return false;
  }
}

}  // namespace sdcpu

namespace sdcpu {

bool cpu_has_native_int8() {
  using isa = dnnl::cpu_isa;
  switch (dnnl::get_effective_cpu_isa()) {
    case isa::avx2_vnni:
    case isa::avx512_core_vnni:
    case isa::avx512_core_bf16:
    case isa::avx512_core_amx:
      return true;
    default:
      return false;
  }
}

}  // namespace sdcpu
