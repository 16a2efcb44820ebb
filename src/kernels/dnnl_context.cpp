#include "kernels/dnnl_context.h"

#include "kernels/scratch.h"

namespace sdcpu {

dnnl::engine& dnnl_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

dnnl::stream& dnnl_stream() {
  static dnnl::stream stream(dnnl_engine());
  return stream;
}

ScratchBuffer add_scratchpad(const dnnl::primitive_desc_base& pd, std::unordered_map<int, dnnl::memory>& args) {
  const dnnl::memory::desc desc = pd.scratchpad_desc();
  const size_t bytes = desc.get_size();
  if (!bytes) return {};
  ScratchBuffer pad(ScratchSlot::primitive, bytes);
  args[DNNL_ARG_SCRATCHPAD] = dnnl::memory(desc, dnnl_engine(), pad.data());
  return pad;
}

}  // namespace sdcpu
