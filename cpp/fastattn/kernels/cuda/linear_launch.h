// Launch parameters of the bias kernels of the CUDA linear path (linear_kernels.cu).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "fastattn/core/dtype.h"

namespace fastattn::kernels::cuda {

// y[r, c] = bias[c] (add = false) or y[r, c] += bias[c] (add = true), for r < rows, c < cols;
// computed in float32 and rounded once to y's dtype.
struct BiasLaunch {
  void* y = nullptr;
  DType y_type = DType::kFloat32;
  int64_t ldy = 0;
  int64_t rows = 0, cols = 0;
  const void* bias = nullptr;
  DType bias_type = DType::kFloat32;
  bool add = true;
  int vec = 1;  // elements per access: 16 / sizeof(y element) when y and bias allow it, else 1
};

void launch_bias_rows(const BiasLaunch& p, cudaStream_t stream);

}  // namespace fastattn::kernels::cuda
