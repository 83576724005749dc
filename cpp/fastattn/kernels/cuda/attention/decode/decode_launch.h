// The compiled split-KV decode kernels, as the host code (decode_cuda.cc) sees them: one entry
// per (dtype, head dim, row tile), with the kernels' addresses for cudaLaunchKernel and the
// shared memory each variant needs. Each generated instance file decode_hd<D>_<dtype>.cu lists
// its row tiles' entries; the attention registry (attention_registry.h) refers to it.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

#include "fastattn/core/dtype.h"

namespace fastattn::kernels::cuda {

struct DecodeKernelEntry {
  DType dtype;
  int head_dim;
  int rows;         // (token, head) rows per CTA
  int block_n;      // keys per tile with cp.async stages (sm_80+)
  int block_n_reg;  // keys per tile with register-staged copies
  // decode_split_kernel<..., kRegStaging = false>: cp.async stages on sm_80+, register-staged
  // copies below; and <..., true>: register-staged copies on sm_80+ too.
  const void* kernel;
  const void* kernel_reg;
  size_t smem_async;  // dynamic shared memory with cp.async stages (sm_80+)
  size_t smem_reg;    // with register-staged copies
};

// decode_merge_kernel<Element> for q's dtype (fp16, bf16, fp32).
const void* decode_merge_kernel_for(DType dtype);
constexpr int kDecodeMergeWarps = 8;  // one merge CTA per (token, head) row

}  // namespace fastattn::kernels::cuda
