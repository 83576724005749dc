// Launch parameters of the CUDA element-wise activation kernels (activation_kernels.cu).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "fastattn/core/dtype.h"

namespace fastattn::kernels::cuda {

enum class EltOp : int {
  kSwiglu,     // out = silu(a[:, c]) * a[:, cols + c]   (a = gate_up)
  kGegluErf,   // out = gelu_erf(a[:, c]) * a[:, cols + c]
  kGegluTanh,  // out = gelu_tanh(a[:, c]) * a[:, cols + c]
  kGeluErf,    // out = gelu_erf(a)
  kGeluTanh,   // out = gelu_tanh(a)
  kAdd,        // out = a + b
};

// Rows of `cols` output elements; every operand has the same dtype and its own row pitch.
struct EltLaunch {
  EltOp op = EltOp::kAdd;
  DType dtype = DType::kFloat32;
  const void* a = nullptr;
  int64_t lda = 0;
  const void* b = nullptr;  // kAdd only
  int64_t ldb = 0;
  void* out = nullptr;
  int64_t ldo = 0;
  int64_t rows = 0, cols = 0;
  int vec = 1;  // elements per access: 16 / sizeof(element) when all rows allow it, else 1
};

void launch_eltwise(const EltLaunch& p, cudaStream_t stream);

}  // namespace fastattn::kernels::cuda
