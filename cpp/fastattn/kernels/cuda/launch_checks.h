// Host-side helpers shared by the CUDA entry points of the norm, linear, activation and
// embedding kernels: device checks, the scoped device switch, row layouts and the alignment test
// that decides between 16-byte vector and scalar kernels. Plain C++ (compiled by the C++
// compiler).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "fastattn/core/context.h"
#include "fastattn/core/cuda/device_guard.h"
#include "fastattn/core/tensor.h"

namespace fastattn::kernels::cuda {

inline cudaStream_t stream_of(const Context& ctx) { return static_cast<cudaStream_t>(ctx.stream); }

// `t` (when defined) must live on the GPU `ref` lives on; InvalidArgument naming both otherwise.
void check_same_device(const Tensor& t, const char* name, const Tensor& ref, const char* ref_name);

// float32, float16 or bfloat16 (the activation dtypes of the CUDA kernels).
void check_activation_dtype(const Tensor& t, const char* name);

// A tensor seen as rows of contiguous elements: row r starts ld elements after row r - 1.
struct RowLayout {
  int64_t rows = 0, cols = 0, ld = 0;
};

// Any-rank tensor with a contiguous last dimension whose leading dimensions merge into one
// uniformly strided row index (true for contiguous tensors and for row-sliced 2-D views).
// InvalidArgument naming the tensor otherwise.
RowLayout row_layout(const Tensor& t, const char* name);

// True when elements [0, n) of every row of a `ld`-strided array at `p` (of `elem_bytes`
// elements) can be read in vectors of `vec` elements: the base address and the row pitch are
// multiples of the vector's size (capped at 16 bytes: wider vectors are read in 16-byte parts)
// and n is a multiple of vec.
bool vector_ok(const void* p, int64_t ld, int64_t n, size_t elem_bytes, int vec);

// Elements in 16 bytes of the given dtype (the vector width of the element-wise kernels).
inline int vec16(DType dt) { return static_cast<int>(16 / dtype_size(dt)); }

}  // namespace fastattn::kernels::cuda
