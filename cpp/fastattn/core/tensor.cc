#include "fastattn/core/tensor.h"

#include <sstream>

namespace fastattn {

std::string Device::str() const {
  switch (type) {
    case DeviceType::kCPU:
      return "cpu";
    case DeviceType::kCUDA:
      return "cuda:" + std::to_string(index);
    case DeviceType::kCUDAHost:
      return "cuda_host";
  }
  return "unknown";
}

Device parse_device(const std::string& s) {
  if (s == "cpu") return Device{DeviceType::kCPU, 0};
  if (s == "cuda") return Device{DeviceType::kCUDA, 0};
  if (s.rfind("cuda:", 0) == 0) {
    const std::string idx = s.substr(5);
    FA_CHECK(!idx.empty() && idx.find_first_not_of("0123456789") == std::string::npos, "device: '",
             s, "' is not a valid device (expected cpu, cuda or cuda:N)");
    // At most 9 digits: std::stoi would throw a bare out_of_range past int's range.
    FA_CHECK(idx.size() <= 9, "device: '", s, "': the GPU index is out of range");
    return Device{DeviceType::kCUDA, std::stoi(idx)};
  }
  FA_THROW_AS(InvalidArgument, "device: '", s,
              "' is not a valid device (expected cpu, cuda or cuda:N)");
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << "]";
  return os.str();
}

Tensor::Tensor(void* data, DType dtype, std::initializer_list<int64_t> shape, Device device)
    : Tensor(data, dtype, std::vector<int64_t>(shape), device) {}

Tensor::Tensor(void* data, DType dtype, const std::vector<int64_t>& shape, Device device)
    : data_(data), dtype_(dtype), device_(device) {
  FA_CHECK(shape.size() <= static_cast<size_t>(kMaxDims), "tensor of ", shape.size(),
           " dimensions: at most ", kMaxDims, " are supported");
  ndim_ = static_cast<int>(shape.size());
  int64_t stride = 1;
  for (int i = ndim_ - 1; i >= 0; --i) {
    FA_CHECK(shape[i] >= 0, "negative size in shape ", shape_str(shape));
    shape_[i] = shape[i];
    strides_[i] = stride;
    stride *= shape[i];
  }
}

Tensor::Tensor(void* data, DType dtype, const std::vector<int64_t>& shape,
               const std::vector<int64_t>& strides, Device device)
    : data_(data), dtype_(dtype), device_(device) {
  FA_CHECK(shape.size() == strides.size(), "shape ", shape_str(shape), " and strides ",
           shape_str(strides), " differ in length");
  FA_CHECK(shape.size() <= static_cast<size_t>(kMaxDims), "tensor of ", shape.size(),
           " dimensions: at most ", kMaxDims, " are supported");
  ndim_ = static_cast<int>(shape.size());
  for (int i = 0; i < ndim_; ++i) {
    FA_CHECK(shape[i] >= 0, "negative size in shape ", shape_str(shape));
    shape_[i] = shape[i];
    strides_[i] = strides[i];
  }
}

int64_t Tensor::size(int i) const {
  const int d = i < 0 ? i + ndim_ : i;
  FA_CHECK(d >= 0 && d < ndim_, "dimension ", i, " out of range for a tensor of ", ndim_,
           " dimensions");
  return shape_[d];
}

int64_t Tensor::stride(int i) const {
  const int d = i < 0 ? i + ndim_ : i;
  FA_CHECK(d >= 0 && d < ndim_, "dimension ", i, " out of range for a tensor of ", ndim_,
           " dimensions");
  return strides_[d];
}

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int i = 0; i < ndim_; ++i) n *= shape_[i];
  return n;
}

bool Tensor::is_contiguous() const {
  int64_t expected = 1;
  for (int i = ndim_ - 1; i >= 0; --i) {
    if (shape_[i] != 1 && strides_[i] != expected) return false;
    expected *= shape_[i];
  }
  return true;
}

Tensor Tensor::reshape(const std::vector<int64_t>& shape) const {
  FA_CHECK(is_contiguous(), "reshape of a non-contiguous tensor ", describe());
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  FA_CHECK(n == numel(), "cannot reshape ", describe(), " to ", shape_str(shape));
  return Tensor(data_, dtype_, shape, device_);
}

Tensor Tensor::slice(int dim, int64_t start, int64_t end) const {
  const int d = dim < 0 ? dim + ndim_ : dim;
  FA_CHECK(d >= 0 && d < ndim_, "slice: dimension ", dim, " out of range for ", describe());
  FA_CHECK(0 <= start && start <= end && end <= shape_[d], "slice [", start, ", ", end,
           ") out of range for dimension ", d, " of ", describe());
  Tensor t = *this;
  t.data_ =
      static_cast<char*>(data_) + start * strides_[d] * static_cast<int64_t>(dtype_size(dtype_));
  t.shape_[d] = end - start;
  return t;
}

Tensor Tensor::select(int dim, int64_t index) const {
  const int d = dim < 0 ? dim + ndim_ : dim;
  FA_CHECK(d >= 0 && d < ndim_, "select: dimension ", dim, " out of range for ", describe());
  FA_CHECK(0 <= index && index < shape_[d], "select: index ", index, " out of range for dimension ",
           d, " of ", describe());
  Tensor t;
  t.data_ =
      static_cast<char*>(data_) + index * strides_[d] * static_cast<int64_t>(dtype_size(dtype_));
  t.dtype_ = dtype_;
  t.device_ = device_;
  t.ndim_ = ndim_ - 1;
  for (int i = 0, j = 0; i < ndim_; ++i) {
    if (i == d) continue;
    t.shape_[j] = shape_[i];
    t.strides_[j] = strides_[i];
    ++j;
  }
  return t;
}

void* Tensor::ptr_at(std::initializer_list<int64_t> index) const {
  FA_CHECK(static_cast<int>(index.size()) <= ndim_, "index of ", index.size(), " entries for ",
           describe());
  int64_t off = 0;
  int i = 0;
  for (int64_t v : index) {
    FA_ASSERT(v >= 0 && v < shape_[i], "index ", v, " out of range for dim ", i, " of ",
              describe());
    off += v * strides_[i];
    ++i;
  }
  return static_cast<char*>(data_) + off * static_cast<int64_t>(dtype_size(dtype_));
}

std::string Tensor::describe() const {
  return std::string(dtype_name(dtype_)) + shape_str(shape());
}

void check_dtype(const Tensor& t, const char* name, DType expected) {
  FA_CHECK(t.dtype() == expected, name, ": expected dtype ", dtype_name(expected), ", got ",
           t.describe());
}

void check_floating(const Tensor& t, const char* name) {
  FA_CHECK(is_floating(t.dtype()), name, ": expected a float32, float16 or bfloat16 tensor, got ",
           t.describe());
}

void check_dim(const Tensor& t, const char* name, int ndim) {
  FA_CHECK(t.dim() == ndim, name, ": expected ", ndim, " dimensions, got ", t.describe());
}

void check_size(const Tensor& t, const char* name, int dim, int64_t expected) {
  FA_CHECK(t.dim() > dim && t.size(dim) == expected, name, ": expected size ", expected,
           " in dimension ", dim, ", got ", t.describe());
}

void check_shape(const Tensor& t, const char* name, const std::vector<int64_t>& expected) {
  FA_CHECK(t.shape() == expected, name, ": expected shape ", shape_str(expected), ", got ",
           t.describe());
}

void check_last_dim_contiguous(const Tensor& t, const char* name) {
  FA_CHECK(t.last_dim_contiguous(), name,
           ": the last dimension must be contiguous (stride 1), got ", t.describe(),
           " with strides ", shape_str(t.strides()));
}

void check_contiguous(const Tensor& t, const char* name) {
  FA_CHECK(t.is_contiguous(), name, ": expected a contiguous tensor, got ", t.describe(),
           " with strides ", shape_str(t.strides()));
}

void check_cpu(const Tensor& t, const char* name) {
  FA_CHECK(t.device().is_cpu_addressable(), name, ": expected a CPU tensor, got one on ",
           t.device().str());
}

void check_same_dtype(const Tensor& a, const char* name_a, const Tensor& b, const char* name_b) {
  FA_CHECK(a.dtype() == b.dtype(), name_a, " and ", name_b, " must have the same dtype, got ",
           a.describe(), " and ", b.describe());
}

}  // namespace fastattn
