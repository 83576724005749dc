// Definition of launch_fmha for the Volta m8n8k4 path, included only by generated instance files.
// D <= 128: 4 warps x 32 query rows, 64-key blocks; shared memory Q 32 KB + K 16 KB + V 16 KB +
// P 16 KB = 80 KB, under Volta's 96 KB per block. D = 256: O for 32 rows x 256 columns would need
// 256 accumulator registers per thread, so O is computed in two 128-column passes (QK^T and the
// softmax recomputed per pass), with 2 warps x 32 rows and 32-key blocks: Q 32 KB + K 16 KB +
// V 16 KB + P 8 KB = 72 KB.
#pragma once

#include "fastattn/core/cuda/cuda_check.h"
#include "fastattn/kernels/cuda/attention/fmha/fmha_fwd_sm70.cuh"
#include "fastattn/kernels/cuda/attention/fmha/fmha_launch.h"

namespace fastattn::kernels::cuda {

// kSwizzle = false gives the plain row-major layout, kept for the bank-conflict comparison.
template <int kHeadDim, bool kSwizzle>
void launch_fmha_sm70(const FmhaDeviceParams& p, cudaStream_t stream) {
  constexpr bool kWide = kHeadDim > 128;
  using T =
      FmhaTraitsSm70<__half, kHeadDim, kWide ? 32 : 64, kWide ? 2 : 4, kSwizzle, kWide ? 2 : 1>;
  auto kernel = fmha_fwd_sm70_kernel<T>;
  FA_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     static_cast<int>(T::kSmemBytes)));
  const dim3 grid((p.max_seqlen_q + T::kBlockM - 1) / T::kBlockM, p.num_heads_q, p.batch);
  kernel<<<grid, T::kThreads, T::kSmemBytes, stream>>>(p);
  FA_CUDA_CHECK_LAUNCH("fmha_fwd_sm70_kernel");
}

template <class Mma, typename Element, int kHeadDim>
void launch_fmha(const FmhaDeviceParams& p, cudaStream_t stream) {
  static_assert(std::is_same_v<Mma, Mma884> && std::is_same_v<Element, __half>,
                "the sm70 launcher serves the fp16 884 path");
  launch_fmha_sm70<kHeadDim, true>(p, stream);
}

}  // namespace fastattn::kernels::cuda
