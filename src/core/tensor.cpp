#include "core/tensor.h"

#include <cstdlib>
#include <cstring>
#include <limits>

#include "core/activation_arena.h"
#include "core/error.h"

namespace sdcpu {

std::string shape_to_string(const Shape& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) throw InvalidArgument("negative dimension in shape " + shape_to_string(shape));
    if (d != 0 && n > std::numeric_limits<int64_t>::max() / d)
      throw InvalidArgument("shape " + shape_to_string(shape) + " is too large");
    n *= d;
  }
  return n;
}

Tensor::Tensor(Shape shape) : shape_(std::move(shape)), numel_(shape_numel(shape_)) {
  if (numel_ == 0) return;
  storage_ = std::static_pointer_cast<float>(allocate_activation(static_cast<size_t>(numel_) * sizeof(float)));
  data_ = storage_.get();
}

Tensor Tensor::zeros(Shape shape) { return full(std::move(shape), 0.0f); }

Tensor Tensor::view(Shape shape, std::shared_ptr<float> storage) {
  Tensor t;
  t.numel_ = shape_numel(shape);
  t.shape_ = std::move(shape);
  if (t.numel_ > 0 && !storage) throw InvalidArgument("Tensor::view: no storage");
  t.storage_ = std::move(storage);
  t.data_ = t.storage_.get();
  return t;
}

Tensor Tensor::full(Shape shape, float value) {
  Tensor t(std::move(shape));
  for (int64_t i = 0; i < t.numel_; ++i) t.data_[i] = value;
  return t;
}

Tensor Tensor::from_vector(Shape shape, const std::vector<float>& values) {
  Tensor t(std::move(shape));
  if (static_cast<int64_t>(values.size()) != t.numel_)
    throw InvalidArgument("from_vector: " + std::to_string(values.size()) + " values for shape " +
                          shape_to_string(t.shape_));
  if (t.numel_) std::memcpy(t.data_, values.data(), values.size() * sizeof(float));
  return t;
}

int64_t Tensor::dim(int i) const {
  const int n = ndim();
  if (i < 0) i += n;
  if (i < 0 || i >= n)
    throw InvalidArgument("dim " + std::to_string(i) + " out of range for shape " + shape_to_string(shape_));
  return shape_[i];
}

Tensor Tensor::reshape(Shape shape) const {
  int infer = -1;
  int64_t known = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      if (infer >= 0) throw InvalidArgument("reshape: more than one -1 in " + shape_to_string(shape));
      infer = static_cast<int>(i);
    } else {
      known *= shape[i];
    }
  }
  if (infer >= 0 && known > 0) shape[infer] = numel_ / known;
  if (shape_numel(shape) != numel_)
    throw InvalidArgument("reshape: cannot view " + shape_to_string(shape_) + " as " + shape_to_string(shape));
  Tensor t = *this;
  t.shape_ = std::move(shape);
  return t;
}

Tensor Tensor::slice0(int64_t begin, int64_t end) const {
  if (ndim() == 0 || begin < 0 || end > shape_[0] || begin > end)
    throw InvalidArgument("slice0: [" + std::to_string(begin) + ", " + std::to_string(end) + ") of " +
                          shape_to_string(shape_));
  const int64_t row = shape_[0] ? numel_ / shape_[0] : 0;
  Tensor t = *this;
  t.shape_[0] = end - begin;
  t.numel_ = row * (end - begin);
  t.data_ = data_ + row * begin;
  return t;
}

Tensor Tensor::clone() const {
  Tensor t(shape_);
  if (numel_) std::memcpy(t.data_, data_, numel_ * sizeof(float));
  return t;
}

Tensor concat0(const std::vector<Tensor>& parts) {
  if (parts.empty()) throw InvalidArgument("concat0: nothing to concatenate");
  Shape shape = parts[0].shape();
  int64_t rows = 0;
  for (const Tensor& p : parts) {
    Shape a = p.shape(), b = shape;
    if (a.empty() || a.size() != b.size()) throw InvalidArgument("concat0: rank mismatch");
    a[0] = b[0] = 0;
    if (a != b)
      throw InvalidArgument("concat0: shapes " + shape_to_string(p.shape()) + " and " + shape_to_string(shape) +
                            " differ beyond dim 0");
    rows += p.shape()[0];
  }
  shape[0] = rows;
  Tensor out(shape);
  float* dst = out.data();
  for (const Tensor& p : parts) {
    if (p.numel()) std::memcpy(dst, p.data(), p.numel() * sizeof(float));
    dst += p.numel();
  }
  return out;
}

}  // namespace sdcpu
