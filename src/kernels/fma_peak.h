// The machine's arithmetic peak, measured: every thread runs independent chains of fused multiply-adds
// (vfmadd231ps for fp32, vdpbf16ps for bf16, vpdpbusd for int8) on registers only, so nothing but the FMA units limits it.
// `sdcpu bench` divides the UNet's achieved GFLOP/s by this to report efficiency; a figure measured on the
// machine itself, with the same threads, is fairer than a datasheet number (clocks drop under AVX-512 load
// on some CPUs, and a shared machine may not give us every core).
#pragma once

namespace sdcpu {

enum class PeakPrecision { kFp32, kBf16, kInt8 };

// True when this build and CPU can run the precision's FMA instruction (bf16 needs AVX512_BF16, int8
// AVX512-VNNI).
bool fma_peak_supported(PeakPrecision precision);

// GFLOP/s (one FMA = 2 flops; one vdpbf16ps lane = 2 products + 2 adds = 4 flops; one vpdpbusd lane 8 integer
// operations, counted alike) over `threads` OpenMP
// threads (0: the current OpenMP default), best of a few repetitions of about `seconds` each. Returns 0
// when the precision is not supported.
double measure_fma_peak_gflops(PeakPrecision precision, int threads = 0, double seconds = 0.1);

}  // namespace sdcpu
