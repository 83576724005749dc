// The compiled split-KV decode kernels, as the host code (decode_cuda.cc) sees them: one entry
// per (dtype, head dim, row tile), with the kernels' addresses for cudaLaunchKernel and the
// shared memory each variant needs. Filled by the instance files decode_<dtype>_hd<D>.cu.
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

// Every instance file decode_<tag>_hd<D>.cu (tag f16 / bf16 / f32) defines
// decode_entries_<tag>_hd<D>(int* n): its entries, one per row tile.
#define FASTATTN_DECODE_FOR_EACH_FILE(X)                                                  \
  X(f16, 64) X(f16, 80) X(f16, 96) X(f16, 128) X(f16, 256) X(bf16, 64) X(bf16, 80)         \
  X(bf16, 96) X(bf16, 128) X(bf16, 256) X(f32, 64) X(f32, 80) X(f32, 96) X(f32, 128)       \
  X(f32, 256)
#define FASTATTN_DECODE_DECLARE_ENTRIES(TAG, D) const DecodeKernelEntry* decode_entries_##TAG##_hd##D(int* n);
FASTATTN_DECODE_FOR_EACH_FILE(FASTATTN_DECODE_DECLARE_ENTRIES)
#undef FASTATTN_DECODE_DECLARE_ENTRIES

// decode_merge_kernel<Element> for q's dtype (fp16, bf16, fp32).
const void* decode_merge_kernel_for(DType dtype);
constexpr int kDecodeMergeWarps = 8;  // one merge CTA per (token, head) row

}  // namespace fastattn::kernels::cuda
