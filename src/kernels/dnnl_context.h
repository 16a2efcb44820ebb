// The process-wide oneDNN CPU engine and stream. oneDNN (Debian's build) runs on OpenMP, like our own
// kernels, so both share one team of threads sized by omp_set_num_threads (DESIGN.md principle 6).
#pragma once
#include <dnnl.hpp>

namespace sdcpu {

dnnl::engine& dnnl_engine();
dnnl::stream& dnnl_stream();

}  // namespace sdcpu
