// WeightStore: the named tensors of one model component (unet, vae, text_encoder), under their
// diffusers/transformers names, whichever file layout they came from.
//
// Networks ask for each weight by name and expected shape while they are built; a missing tensor or a
// wrong shape is a ModelError naming it. Tensors nobody asked for (EMA copies, position_ids, ...) are
// not errors: unused() lists them for `sdcpu info`.
#pragma once
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "core/compute_type.h"
#include "core/tensor.h"
#include "formats/safetensors.h"

namespace sdcpu {

class PackedWeightCache;

class WeightStore {
 public:
  explicit WeightStore(std::string component = "model") : component_(std::move(component)) {}

  // Makes `file`'s tensor `file_name` available as `name`. A later add of the same name replaces it.
  void add(const std::string& name, std::shared_ptr<const SafetensorsFile> file, const std::string& file_name);
  // Makes rows [first_row, first_row + rows) of `file`'s tensor `file_name` (split along its first dimension)
  // available as `name`, without copying: e.g. the q, k and v projections that OpenCLIP stores as one fused
  // in_proj_weight [3W, W]. ModelError if the tensor has no such rows.
  void add_rows(const std::string& name, std::shared_ptr<const SafetensorsFile> file, const std::string& file_name,
                int64_t first_row, int64_t rows);
  // Makes the transpose of `file`'s 2-D tensor `file_name` available as `name` (shape [cols, rows]); get() copies
  // it transposed. For OpenCLIP's text_projection [width, projection], which diffusers loads as
  // text_projection.weight = checkpoint[...].T (single_file_utils.create_text_encoder_from_open_clip_checkpoint).
  void add_transposed(const std::string& name, std::shared_ptr<const SafetensorsFile> file,
                      const std::string& file_name);
  // Adds every tensor of `file` under its own name.
  void add_all(const std::shared_ptr<const SafetensorsFile>& file);

  bool contains(const std::string& name) const { return entries_.count(name) != 0; }
  // Shape of a stored tensor; ModelError if missing.
  const Shape& shape(const std::string& name) const;

  // The weight `name` converted to fp32, checked against `expected`. Trailing size-1 dimensions are
  // ignored in the comparison (a 1x1 convolution kernel [O, I, 1, 1] serves as a linear weight [O, I],
  // as the original VAE attention layers store it); the result has the expected shape.
  Tensor get(const std::string& name, const Shape& expected) const;
  // The same for a lookup table read a few rows at a time (CLIP's token embedding: 152 MB, of which a prompt
  // reads 77 rows): fp32 tables stay in the file's pages and only the rows read become resident.
  Tensor get_table(const std::string& name, const Shape& expected) const;
  // Checks `name` against `expected` as get() does, and counts it as used, without reading it (a weight whose
  // packed form comes from the cache of packed weights).
  void check(const std::string& name, const Shape& expected) const { checked(name, expected); }

  // The precision the network built from this store computes in (core/compute_type.h): its layers pack their
  // weights for it at load. get() still returns fp32; the layers convert once while packing.
  // (fp32 weights come back as views into the memory-mapped file, not copies: SafetensorsFile::view_f32.)
  ComputeType compute_type() const { return compute_type_; }
  void set_compute_type(ComputeType type) { compute_type_ = type; }
  // The compute type of one layer (`layer`: its weight's name without ".weight"): the store's, except that in
  // int8 a layer whose name contains one of the int8 exclusions computes in bf16 (a model's int8 policy,
  // pipeline/int8_policy.h). Records the answer for int8_report().
  ComputeType compute_type_for(const std::string& layer) const;
  void set_int8_exclusions(std::vector<std::string> patterns) { int8_exclusions_ = std::move(patterns); }
  // Which layers were asked for int8 and which of them the exclusions kept in bf16, in the order asked.
  struct Int8Report {
    std::vector<std::string> int8, kept;
  };
  const Int8Report& int8_report() const { return int8_report_; }

  // Where the layers built from this store look for their weights already packed, and record the ones they pack
  // (kernels/packed_weight_cache.h); null: no cache.
  const std::shared_ptr<PackedWeightCache>& pack_cache() const { return pack_cache_; }
  void set_pack_cache(std::shared_ptr<PackedWeightCache> cache) { pack_cache_ = std::move(cache); }

  const std::string& component() const { return component_; }
  std::vector<std::string> names() const;
  // The paths of the files the tensors come from, sorted, each once.
  std::vector<std::string> files() const;
  // Names never fetched with get(), in sorted order.
  std::vector<std::string> unused() const;
  size_t size() const { return entries_.size(); }

 private:
  struct Entry {
    std::shared_ptr<const SafetensorsFile> file;
    TensorInfo info;  // the file's header entry, or a block of its rows (add_rows)
    bool transposed = false;  // add_transposed: `info` is the file's [rows, cols]; the weight is its transpose
    Shape shape;              // the weight's shape: info.shape, reversed when transposed
  };
  const Entry& entry(const std::string& name) const;
  // The entry's tensor after checking its shape against `expected`; marks it used.
  const TensorInfo& checked(const std::string& name, const Shape& expected) const;

  std::string component_;
  ComputeType compute_type_ = ComputeType::f32;
  std::vector<std::string> int8_exclusions_;
  mutable Int8Report int8_report_;
  std::shared_ptr<PackedWeightCache> pack_cache_;
  std::map<std::string, Entry> entries_;
  mutable std::set<std::string> used_;
};

}  // namespace sdcpu
