// The precision names users give (--precision, LoadOptions::precision, the service's requests) and the policy
// behind "auto" (DESIGN.md principle 4: precision is a policy, measured).
#pragma once
#include <string>

#include "core/compute_type.h"

namespace sdcpu {

// "fp32" -> fp32; "bf16" -> bf16, refused (InvalidArgument) on a CPU without native bf16 products, where it
// would be slower than fp32; "auto" -> bf16 where the CPU has AVX512_BF16 or AMX, else fp32. bf16's measured
// cost: README, "Precision". "int8" -> int8 (core/compute_type.h), refused without native int8 and bf16 products;
// "auto" never picks it: its quality loss is a choice the user makes (README, "int8").
ComputeType resolve_precision(const std::string& name);

}  // namespace sdcpu
