// What this CPU's instruction set offers the kernels, as oneDNN sees it (so ONEDNN_MAX_CPU_ISA, which caps what
// oneDNN dispatches to, caps this too).
#pragma once

namespace sdcpu {

// True when the CPU computes bf16 products natively: AVX512_BF16 (vdpbf16ps) or AMX. Without them oneDNN
// emulates bf16 or falls back to reference code, and bf16 is slower than fp32.
bool cpu_has_native_bf16();

// True when the CPU multiplies int8 natively: AVX512-VNNI or AVX-VNNI (vpdpbusd: four int8 products per 32-bit
// lane, twice vdpbf16ps's two) or AMX-INT8. Without them int8 products take several instructions each and are no
// faster than bf16.
bool cpu_has_native_int8();

}  // namespace sdcpu
