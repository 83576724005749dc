// Helpers shared by the CPU kernels (internal: not part of the kernel contracts).
#pragma once

#include <cstdint>
#include <vector>

#include "fastattn/core/context.h"
#include "fastattn/core/dtype.h"
#include "fastattn/core/tensor.h"

namespace fastattn::kernels::cpu {

// Below this many elements of work an OpenMP region costs more than it saves (a decode step's
// element-wise ops touch ~1K elements; forking two threads costs a few microseconds).
constexpr int64_t kParallelMinElements = 32768;

// Threads for a region of `work` elements: 1 when the work is too small to split.
inline int threads_for(const Context& ctx, int64_t work) {
  return work < kParallelMinElements ? 1 : context_threads(ctx);
}

// Rows of a tensor whose last dimension is contiguous: row r of the flattened [rows, last]
// view starts at element offset row_offset(r). Works for any rank and any leading strides.
class RowIndex {
 public:
  explicit RowIndex(const Tensor& t) {
    const int nd = t.dim();
    for (int i = 0; i + 1 < nd; ++i) {
      sizes_.push_back(t.size(i));
      strides_.push_back(t.stride(i));
    }
    rows_ = 1;
    for (int64_t s : sizes_) rows_ *= s;
    cols_ = nd == 0 ? 1 : t.size(-1);
  }
  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  int64_t row_offset(int64_t r) const {
    int64_t off = 0;
    for (int i = static_cast<int>(sizes_.size()) - 1; i >= 0; --i) {
      off += (r % sizes_[i]) * strides_[i];
      r /= sizes_[i];
    }
    return off;
  }

 private:
  std::vector<int64_t> sizes_, strides_;
  int64_t rows_ = 1, cols_ = 1;
};

// Reads element i of a float vector stored as float32 / float16 / bfloat16 into a float buffer.
// `dst` must hold n floats; returns dst for fp16/bf16 and the original pointer for fp32.
inline const float* as_float(const Tensor& t, std::vector<float>& dst) {
  if (t.dtype() == DType::kFloat32) return t.data_as<const float>();
  dst.resize(static_cast<size_t>(t.numel()));
  convert_to_float(t.data(), t.dtype(), dst.data(), t.numel());
  return dst.data();
}

// True when the byte ranges [a, a + na) and [b, b + nb) overlap.
inline bool ranges_overlap(const void* a, size_t na, const void* b, size_t nb) {
  const char* pa = static_cast<const char*>(a);
  const char* pb = static_cast<const char*>(b);
  return pa < pb + nb && pb < pa + na;
}

}  // namespace fastattn::kernels::cpu
