// Tensor: a non-owning, strided view of memory (data pointer, dtype, shape, strides in elements,
// device). Ownership lives elsewhere: in a Buffer (allocator.h), a memory-mapped weight file, or
// a numpy / torch array handed in through the bindings.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "fastattn/core/device.h"
#include "fastattn/core/dtype.h"
#include "fastattn/core/error.h"

namespace fastattn {

constexpr int kMaxDims = 6;

class Tensor {
 public:
  Tensor() = default;
  // Contiguous (row-major) view.
  Tensor(void* data, DType dtype, std::initializer_list<int64_t> shape, Device device = {});
  Tensor(void* data, DType dtype, const std::vector<int64_t>& shape, Device device = {});
  // Strided view; strides are in elements.
  Tensor(void* data, DType dtype, const std::vector<int64_t>& shape,
         const std::vector<int64_t>& strides, Device device = {});

  // A default-constructed Tensor is "undefined": used for optional arguments.
  bool defined() const { return data_ != nullptr || ndim_ > 0; }
  void* data() const { return data_; }
  template <typename T>
  T* data_as() const {
    return static_cast<T*>(data_);
  }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  int dim() const { return ndim_; }
  int64_t size(int i) const;    // negative i counts from the end
  int64_t stride(int i) const;  // in elements
  std::vector<int64_t> shape() const { return {shape_.begin(), shape_.begin() + ndim_}; }
  std::vector<int64_t> strides() const { return {strides_.begin(), strides_.begin() + ndim_}; }
  int64_t numel() const;
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }
  bool is_contiguous() const;
  // True when the last dimension has stride 1 (rows may be padded).
  bool last_dim_contiguous() const { return ndim_ == 0 || strides_[ndim_ - 1] == 1; }

  // Views (no copies). Shape errors throw InvalidArgument.
  Tensor reshape(const std::vector<int64_t>& shape) const;  // contiguous tensors only
  Tensor slice(int dim, int64_t start, int64_t end) const;  // [start, end) along dim
  Tensor select(int dim, int64_t index) const;              // drops dim
  // Element pointer at the given index (one entry per dimension, or fewer for a sub-tensor).
  void* ptr_at(std::initializer_list<int64_t> index) const;

  // "float32[2, 3, 4]" — used in error messages.
  std::string describe() const;

 private:
  void* data_ = nullptr;
  DType dtype_ = DType::kFloat32;
  Device device_{};
  int ndim_ = 0;
  std::array<int64_t, kMaxDims> shape_{};
  std::array<int64_t, kMaxDims> strides_{};
};

// Argument checks with messages that name the tensor (by its parameter name) and what is wrong.
void check_dtype(const Tensor& t, const char* name, DType expected);
void check_floating(const Tensor& t, const char* name);
void check_dim(const Tensor& t, const char* name, int ndim);
// Check one dimension: name[dim] == expected.
void check_size(const Tensor& t, const char* name, int dim, int64_t expected);
void check_shape(const Tensor& t, const char* name, const std::vector<int64_t>& expected);
void check_contiguous(const Tensor& t, const char* name);
// The last dimension has stride 1 (rows may be strided): every kernel's row-wise access needs it.
void check_last_dim_contiguous(const Tensor& t, const char* name);
void check_cpu(const Tensor& t, const char* name);
void check_same_dtype(const Tensor& a, const char* name_a, const Tensor& b, const char* name_b);

std::string shape_str(const std::vector<int64_t>& shape);

}  // namespace fastattn
