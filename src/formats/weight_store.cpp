#include "formats/weight_store.h"

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
  entries_[name] = Entry{std::move(file), *info};
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
  entries_[name] = Entry{std::move(file), std::move(part)};
}

void WeightStore::add_all(const std::shared_ptr<const SafetensorsFile>& file) {
  for (const auto& t : file->tensors()) entries_[t.name] = Entry{file, t};
}

const WeightStore::Entry& WeightStore::entry(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) throw ModelError(component_ + ": missing tensor '" + name + "'");
  return it->second;
}

const Shape& WeightStore::shape(const std::string& name) const { return entry(name).info.shape; }

const TensorInfo& WeightStore::checked(const std::string& name, const Shape& expected) const {
  const TensorInfo& info = entry(name).info;
  if (strip_trailing_ones(info.shape) != strip_trailing_ones(expected))
    throw ModelError(component_ + ": tensor '" + name + "' has shape " + shape_to_string(info.shape) +
                     ", the configuration needs " + shape_to_string(expected));
  used_.insert(name);
  return info;
}

Tensor WeightStore::get(const std::string& name, const Shape& expected) const {
  const TensorInfo& info = checked(name, expected);
  // fp32 weights are not copied: the layers pack straight from the mapping (one pass over the bytes, not two).
  return SafetensorsFile::view_f32(entry(name).file, info).reshape(expected);
}

Tensor WeightStore::get_table(const std::string& name, const Shape& expected) const {
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

}  // namespace sdcpu
