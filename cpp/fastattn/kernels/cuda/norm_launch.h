// Launch parameters of the CUDA RMSNorm / LayerNorm kernels (norm_kernels.cu); filled and
// checked by norm_cuda.cc.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "fastattn/core/dtype.h"

namespace fastattn::kernels::cuda {

struct NormLaunch {
  DType act = DType::kFloat32;  // x, residual, out
  const void* x = nullptr;      // norm: the input; add_norm: the value added into residual
  int64_t ldx = 0;
  void* residual = nullptr;  // add_norm only (null for norm): residual += x, then normalised
  int64_t ldr = 0;
  void* out = nullptr;
  int64_t ldo = 0;
  const void* weight = nullptr;  // [cols], any float dtype
  DType weight_type = DType::kFloat32;
  const void* bias = nullptr;  // [cols] or null (LayerNorm only)
  DType bias_type = DType::kFloat32;
  int64_t rows = 0, cols = 0;
  float eps = 0.0f;
  bool layer_norm = false;
  // Elements per memory access: 16 / sizeof(act) when every row of every operand allows it
  // (see vector_ok), else 1.
  int vec = 1;
};

// One CTA per row on `stream`; rows > 0 and cols > 0.
void launch_norm(const NormLaunch& p, cudaStream_t stream);

}  // namespace fastattn::kernels::cuda
