#include "fastattn/kernels/cuda/launch_checks.h"

#include <algorithm>

#include "fastattn/core/cuda/cuda_check.h"

namespace fastattn::kernels::cuda {

void check_same_device(const Tensor& t, const char* name, const Tensor& ref, const char* ref_name) {
  if (!t.defined()) return;
  FA_CHECK(t.device() == ref.device(), name, " is on ", t.device().str(), " but ", ref_name,
           " is on ", ref.device().str(), ": every tensor of one call must be on the same device");
}

void check_activation_dtype(const Tensor& t, const char* name) {
  FA_CHECK(is_floating(t.dtype()), name,
           ": the CUDA kernels take float32, float16 or bfloat16 activations, got ", t.describe());
}

RowLayout row_layout(const Tensor& t, const char* name) {
  FA_CHECK(t.dim() >= 1, name, ": expected at least one dimension, got ", t.describe());
  check_last_dim_contiguous(t, name);
  const int nd = t.dim();
  RowLayout r;
  r.cols = t.size(nd - 1);
  r.rows = 1;
  for (int i = 0; i + 1 < nd; ++i) r.rows *= t.size(i);
  r.ld = std::max<int64_t>(r.cols, 1);  // the pitch of a single row is never used
  if (r.rows <= 1) return r;
  // Leading dimensions of size > 1 must merge into one row index:
  // stride[i] == stride[j] * size[j] for consecutive such dimensions i < j.
  int inner = -1;  // the innermost leading dimension of size > 1
  for (int i = nd - 2; i >= 0; --i) {
    if (t.size(i) <= 1) continue;
    if (inner < 0) {
      r.ld = t.stride(i);
    } else {
      FA_CHECK(t.stride(i) == t.stride(inner) * t.size(inner), name,
               ": the CUDA kernels need the leading dimensions to form evenly strided rows, got ",
               t.describe(), " with strides ", shape_str(t.strides()));
    }
    inner = i;
  }
  FA_CHECK(r.ld >= r.cols, name, ": row stride ", r.ld, " is smaller than its row length ", r.cols);
  return r;
}

bool vector_ok(const void* p, int64_t ld, int64_t n, size_t elem_bytes, int vec) {
  if (vec <= 1) return true;
  const uint64_t align = std::min<uint64_t>(16, static_cast<uint64_t>(vec) * elem_bytes);
  return reinterpret_cast<uintptr_t>(p) % align == 0 &&
         (static_cast<uint64_t>(ld) * elem_bytes) % align == 0 && n % vec == 0;
}

}  // namespace fastattn::kernels::cuda
