// Launch parameters of the small-batch GEMV (gemv_small_batch.cu): y[M, N] = x[M, K] w[N, K]^T
// (+ bias) for decode-sized M, on tensor cores, streaming w once at close to the DRAM bandwidth.
// linear_cuda.cc routes eligible calls here instead of cuBLAS (whose M <= 16 kernels read the
// weights at ~0.9 of the copy bandwidth on the H100: docs/results/decode_step_profile_*.md).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "fastattn/core/dtype.h"

namespace fastattn::kernels::cuda {

// Largest M the kernel takes: two n8 tiles of tokens per m16n8k16 MMA row block.
constexpr int kSmallBatchGemvMaxRows = 16;
// Largest M linear()'s automatic choice gives it (larger M, up to kSmallBatchGemvMaxRows, only
// when forced): the measured end-to-end winner (docs/KERNELS.md).
constexpr int kSmallBatchGemvAutoRows = 8;
// Warps per thread block: they split K and add their partial sums in a fixed order.
constexpr int kSmallBatchGemvMaxWarps = 8;

struct SmallBatchGemvLaunch {
  const void* x = nullptr;  // [M, K] rows ldx apart; float16 or bfloat16
  int64_t ldx = 0;
  const void* w = nullptr;  // [N, K] contiguous, x's dtype
  DType dtype = DType::kFloat16;
  void* y = nullptr;  // [M, N] rows ldy apart; x's dtype or float32
  int64_t ldy = 0;
  DType y_type = DType::kFloat16;
  const void* bias = nullptr;  // [N] or null; rounded to y's dtype before the float32 add
  DType bias_type = DType::kFloat16;
  int M = 0, N = 0, K = 0;
  int warps = 0;  // warps per block, 1..kSmallBatchGemvMaxWarps (small_batch_gemv_warps)
  int stages =
      2;  // register groups of loads in flight per warp: 1, 2 or 3 (software-pipelined; 3: weights only)
};

// Whether the kernel takes this call on a device of compute capability cc (e.g. 90): sm_80+,
// float16 / bfloat16, 1 <= M <= 16, K a multiple of 8, x / w 16-byte aligned, ldx a multiple of 8.
bool small_batch_gemv_fits(int cc, DType dtype, int64_t M, int64_t K, const void* x, int64_t ldx,
                           const void* w);

// The warps per block the launch uses when SmallBatchGemvLaunch::warps is 0.
int small_batch_gemv_warps(int64_t N, int64_t K, int sms);

void launch_small_batch_gemv(const SmallBatchGemvLaunch& p, cudaStream_t stream);

}  // namespace fastattn::kernels::cuda
