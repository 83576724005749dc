// Launch parameters of the CUDA embedding lookup (embedding_kernels.cu).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "fastattn/core/dtype.h"

namespace fastattn::kernels::cuda {

// out[t, :] = table[ids[t] - vocab_start, :] converted to out's dtype, or zeros where that row
// lies outside [0, vocab). out_type is table_type or float32.
struct EmbeddingLaunch {
  const void* ids = nullptr;
  DType id_type = DType::kInt32;  // int32 or int64
  const void* table = nullptr;
  DType table_type = DType::kFloat32;
  int64_t ldt = 0;
  int64_t vocab = 0;  // rows of the table
  void* out = nullptr;
  DType out_type = DType::kFloat32;
  int64_t ldo = 0;
  int64_t tokens = 0, cols = 0;
  int64_t vocab_start = 0;
  int vec = 1;  // elements per access: 16 / sizeof(table element) when all rows allow it, else 1
};

void launch_embedding(const EmbeddingLaunch& p, cudaStream_t stream);

}  // namespace fastattn::kernels::cuda
