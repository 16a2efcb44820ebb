// The process-wide oneDNN CPU engine and stream. oneDNN (Debian's build) runs on OpenMP, like our own
// kernels, so both share one team of threads sized by omp_set_num_threads (DESIGN.md principle 6).
#pragma once
#include <dnnl.hpp>
#include <string>
#include <unordered_map>

#include "kernels/scratch.h"

namespace sdcpu {

dnnl::engine& dnnl_engine();
dnnl::stream& dnnl_stream();

// Whether oneDNN chose its reference (unoptimized, orders of magnitude slower) implementation for `pd`: callers
// then try another layout or precision.
inline bool is_reference_implementation(const dnnl::primitive_desc_base& pd) {
  return std::string(pd.impl_info_str()).rfind("ref", 0) == 0;
}

// Convolutions and matmuls are created with scratchpad_mode::user and run with the scratchpad that
// add_scratchpad() takes as a ScratchBuffer (kernels/scratch.h): planned with the activations inside an arena pass. In
// oneDNN's default
// ("library") mode this build gives every primitive a scratchpad of its own for as long as the primitive lives:
// measured, 256 MB for one of the VAE's 1x1 convolutions at 512x512 and 390 MB in all after one decode, held
// for the rest of the process.
inline dnnl::primitive_attr with_user_scratchpad(dnnl::primitive_attr attr = dnnl::primitive_attr()) {
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}
// Adds DNNL_ARG_SCRATCHPAD for `pd` to `args` when it needs one; the returned buffer must live until the
// primitive has run.
[[nodiscard]] ScratchBuffer add_scratchpad(const dnnl::primitive_desc_base& pd,
                                           std::unordered_map<int, dnnl::memory>& args);

}  // namespace sdcpu
