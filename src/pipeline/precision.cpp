#include "pipeline/precision.h"

#include "core/error.h"
#include "kernels/cpu_features.h"

namespace sdcpu {

ComputeType resolve_precision(const std::string& name) {
  if (name == "fp32") return ComputeType::f32;
  if (name == "auto") return cpu_has_native_bf16() ? ComputeType::bf16 : ComputeType::f32;
  if (name == "bf16") {
    if (!cpu_has_native_bf16())
      throw InvalidArgument("bf16 needs a CPU with AVX512_BF16 or AMX, and this one has neither: use fp32 or auto");
    return ComputeType::bf16;
  }
  if (name == "int8") {
    if (!cpu_has_native_int8())
      throw InvalidArgument("int8 needs a CPU with AVX512-VNNI, AVX-VNNI or AMX, and this one has none: use bf16, fp32 "
                            "or auto");
    if (!cpu_has_native_bf16())
      throw InvalidArgument("int8 keeps the attention and some layers in bf16, which needs AVX512_BF16 or AMX, and "
                            "this CPU has neither: use fp32 or auto");
    return ComputeType::int8;
  }
  throw InvalidArgument("precision must be fp32, bf16, int8 or auto, got '" + name + "'");
}

}  // namespace sdcpu
