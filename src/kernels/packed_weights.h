// A layer's weight in the layout(s) its oneDNN primitives asked for (format_tag::any), each reordered once from
// the checkpoint's values and kept in a buffer of ours (core/memory.h: huge pages, so packing 1.7 GB of weights
// does not page-fault 4 KiB at a time). Shared by PreparedConv2d and PreparedLinear. Not thread-safe by itself:
// its owners call it under their own mutex.
#pragma once
#include <dnnl.hpp>
#include <memory>
#include <vector>

namespace sdcpu {

class PackedWeights {
 public:
  // Packs `plain` (the checkpoint's values, any layout oneDNN can describe) into `desc`; the first layout.
  void pack(const dnnl::memory& plain, const dnnl::memory::desc& desc);
  // The weight in layout `desc`: the existing copy, or a new one reordered from the first. Pointers stay valid
  // as long as this object.
  const dnnl::memory* in(const dnnl::memory::desc& desc);
  bool empty() const { return copies_.empty(); }

 private:
  struct Copy;
  const dnnl::memory* add(const dnnl::memory& from, const dnnl::memory::desc& desc);
  std::vector<std::shared_ptr<Copy>> copies_;
};

}  // namespace sdcpu
