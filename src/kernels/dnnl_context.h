// The process-wide oneDNN CPU engine and stream. oneDNN (Debian's build) runs on OpenMP, like our own
// kernels, so both share one team of threads sized by omp_set_num_threads (DESIGN.md principle 6).
#pragma once
#include <dnnl.hpp>
#include <string>

namespace sdcpu {

dnnl::engine& dnnl_engine();
dnnl::stream& dnnl_stream();

// Whether oneDNN chose its reference (unoptimized, orders of magnitude slower) implementation for `pd`: callers
// then try another layout or precision.
inline bool is_reference_implementation(const dnnl::primitive_desc_base& pd) {
  return std::string(pd.impl_info_str()).rfind("ref", 0) == 0;
}

}  // namespace sdcpu
