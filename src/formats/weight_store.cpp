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
  if (!file->find(file_name)) throw ModelError(file->path() + ": no tensor named '" + file_name + "'");
  entries_[name] = Entry{std::move(file), file_name};
}

void WeightStore::add_all(const std::shared_ptr<const SafetensorsFile>& file) {
  for (const auto& t : file->tensors()) entries_[t.name] = Entry{file, t.name};
}

const WeightStore::Entry& WeightStore::entry(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) throw ModelError(component_ + ": missing tensor '" + name + "'");
  return it->second;
}

const Shape& WeightStore::shape(const std::string& name) const {
  const Entry& e = entry(name);
  return e.file->find(e.file_name)->shape;
}

const TensorInfo& WeightStore::checked(const std::string& name, const Shape& expected) const {
  const Entry& e = entry(name);
  const TensorInfo& info = *e.file->find(e.file_name);
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
