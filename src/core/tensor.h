// Tensor: a shape and a reference-counted, 64-byte aligned block of fp32 values, row-major
// (PyTorch's contiguous layout: NCHW for images, [batch, tokens, channels] for sequences).
//
// Copies share storage (like torch.Tensor); clone() makes a deep copy. Storage comes from the thread's activation
// arena pass when there is one (core/activation_arena.h), else from the heap. Lower precisions and blocked
// layouts live inside the kernels that want them (prepacked weights), not here.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

namespace sdcpu {

using Shape = std::vector<int64_t>;

std::string shape_to_string(const Shape& shape);
int64_t shape_numel(const Shape& shape);

class Tensor {
 public:
  Tensor() = default;
  // Uninitialized storage for `shape`.
  explicit Tensor(Shape shape);
  static Tensor zeros(Shape shape);
  static Tensor full(Shape shape, float value);
  static Tensor from_vector(Shape shape, const std::vector<float>& values);
  // A tensor over memory it does not allocate (a weight inside a memory-mapped file): `storage` points at
  // numel(shape) floats, 4-byte aligned, and its deleter runs when the last copy goes.
  static Tensor view(Shape shape, std::shared_ptr<float> storage);

  const Shape& shape() const { return shape_; }
  int ndim() const { return static_cast<int>(shape_.size()); }
  // Size of dimension i; negative i counts from the end as in PyTorch.
  int64_t dim(int i) const;
  int64_t numel() const { return numel_; }
  bool empty() const { return numel_ == 0; }

  float* data() { return data_; }
  const float* data() const { return data_; }
  float& operator[](int64_t i) { return data_[i]; }
  float operator[](int64_t i) const { return data_[i]; }

  // Same storage, new shape with the same number of elements; one dimension may be -1.
  Tensor reshape(Shape shape) const;
  // Rows [begin, end) of dimension 0, sharing storage.
  Tensor slice0(int64_t begin, int64_t end) const;
  Tensor clone() const;
  // No other tensor shares this one's storage (a kernel may then write its result into it).
  bool storage_unique() const { return storage_ && storage_.use_count() == 1; }
  // This tensor itself when no other tensor shares its storage, else a copy: a buffer a kernel may overwrite
  // (a residual its sum post-op adds into) without changing what anyone else sees.
  Tensor unshared() const { return storage_unique() ? *this : clone(); }
  std::vector<float> to_vector() const { return std::vector<float>(data_, data_ + numel_); }

 private:
  Shape shape_;
  int64_t numel_ = 0;
  std::shared_ptr<float> storage_;
  float* data_ = nullptr;
};

// Concatenates along dimension 0 (the batch): used for the classifier-free guidance batch.
Tensor concat0(const std::vector<Tensor>& parts);

}  // namespace sdcpu
