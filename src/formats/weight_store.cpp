#include "formats/weight_store.h"

#include <algorithm>

#include "core/error.h"

namespace sdcpu {
namespace {

Shape strip_trailing_ones(Shape s) {
  while (s.size() > 1 && s.back() == 1) s.pop_back();
  return s;
}

}  // namespace

void WeightStore::add(const std::string& name, std::shared_ptr<const SafetensorsFile> file,
                      const std::string& file_name) {
  const TensorInfo* info = file->find(file_name);
  if (!info) throw ModelError(file->path() + ": no tensor named '" + file_name + "'");
  entries_[name] = Entry{std::move(file), *info, false, info->shape};
}

void WeightStore::add_transposed(const std::string& name, std::shared_ptr<const SafetensorsFile> file,
                                 const std::string& file_name) {
  const TensorInfo* info = file->find(file_name);
  if (!info) throw ModelError(file->path() + ": no tensor named '" + file_name + "'");
  if (info->shape.size() != 2)
    throw ModelError(file->path() + ": tensor '" + file_name + "' of shape " + shape_to_string(info->shape) +
                     " is not a matrix, so it cannot be transposed");
  entries_[name] = Entry{std::move(file), *info, true, {info->shape[1], info->shape[0]}};
}

void WeightStore::add_rows(const std::string& name, std::shared_ptr<const SafetensorsFile> file,
                           const std::string& file_name, int64_t first_row, int64_t rows) {
  const TensorInfo* info = file->find(file_name);
  if (!info) throw ModelError(file->path() + ": no tensor named '" + file_name + "'");
  if (info->shape.empty() || first_row < 0 || rows <= 0 || first_row + rows > info->shape[0])
    throw ModelError(file->path() + ": tensor '" + file_name + "' of shape " + shape_to_string(info->shape) +
                     " has no rows " + std::to_string(first_row) + ".." + std::to_string(first_row + rows - 1));
  // The rows of a row-major tensor are one contiguous byte range (safetensors stores tensors dense, row-major).
  const uint64_t row_bytes = (info->end - info->begin) / static_cast<uint64_t>(info->shape[0]);
  TensorInfo part = *info;
  part.shape[0] = rows;
  part.begin = info->begin + static_cast<uint64_t>(first_row) * row_bytes;
  part.end = part.begin + static_cast<uint64_t>(rows) * row_bytes;
  const Shape shape = part.shape;
  entries_[name] = Entry{std::move(file), std::move(part), false, shape};
}

void WeightStore::add_all(const std::shared_ptr<const SafetensorsFile>& file) {
  for (const auto& t : file->tensors()) entries_[t.name] = Entry{file, t, false, t.shape};
}

const WeightStore::Entry& WeightStore::entry(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) throw ModelError(component_ + ": missing tensor '" + name + "'");
  return it->second;
}

const Shape& WeightStore::shape(const std::string& name) const { return entry(name).shape; }

const TensorInfo& WeightStore::checked(const std::string& name, const Shape& expected) const {
  const Entry& e = entry(name);
  if (strip_trailing_ones(e.shape) != strip_trailing_ones(expected))
    throw ModelError(component_ + ": tensor '" + name + "' has shape " + shape_to_string(e.shape) +
                     ", the configuration needs " + shape_to_string(expected));
  used_.insert(name);
  return e.info;
}

Tensor WeightStore::get(const std::string& name, const Shape& expected) const {
  const TensorInfo& info = checked(name, expected);
  if (entry(name).transposed) {
    const Tensor stored = SafetensorsFile::view_f32(entry(name).file, info);
    const int64_t rows = info.shape[0], cols = info.shape[1];
    Tensor out({cols, rows});
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) out.data()[c * rows + r] = stored.data()[r * cols + c];
    return out.reshape(expected);
  }
  // fp32 weights are not copied: the layers pack straight from the mapping (one pass over the bytes, not two).
  return SafetensorsFile::view_f32(entry(name).file, info).reshape(expected);
}

Tensor WeightStore::get_table(const std::string& name, const Shape& expected) const {
  if (entry(name).transposed) return get(name, expected);
  const TensorInfo& info = checked(name, expected);
  return SafetensorsFile::view_f32(entry(name).file, info, /*prefault=*/false).reshape(expected);
}

std::vector<std::string> WeightStore::names() const {
  std::vector<std::string> out;
  for (const auto& [name, e] : entries_) out.push_back(name);
  return out;
}

std::vector<std::string> WeightStore::files() const {
  std::set<std::string> paths;
  for (const auto& [name, e] : entries_) paths.insert(e.file->path());
  return {paths.begin(), paths.end()};
}

std::vector<std::string> WeightStore::unused() const {
  std::vector<std::string> out;
  for (const auto& [name, e] : entries_)
    if (!used_.count(name)) out.push_back(name);
  return out;
}

namespace {

// A network built twice from one store (a weight cache's first start) asks twice.
void record_once(std::vector<std::string>& names, const std::string& name) {
  if (std::find(names.begin(), names.end(), name) == names.end()) names.push_back(name);
}

}  // namespace

ComputeType WeightStore::compute_type_for(const std::string& layer) const {
  if (compute_type_ != ComputeType::int8) return compute_type_;
  for (const std::string& pattern : int8_exclusions_) {
    if (layer.find(pattern) != std::string::npos) {
      record_once(int8_report_.kept, layer);
      return without_int8(compute_type_);
    }
  }
  record_once(int8_report_.int8, layer);
  return compute_type_;
}

}  // namespace sdcpu
