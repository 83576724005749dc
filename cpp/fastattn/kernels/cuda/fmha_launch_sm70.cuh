// Definition of launch_fmha for the Volta m8n8k4 path, included only by generated instance files.
// 4 warps x 32 query rows, 64-key blocks; shared memory (D <= 128): Q 32 KB + K 16 KB + V 16 KB
// + P 16 KB = 80 KB, under Volta's 96 KB per block. Head dim 256 would need 256 accumulator
// registers per thread for O in this warp tiling, so it is not instantiated for 884.
#pragma once

#include "fastattn/kernels/cuda/cuda_check.h"
#include "fastattn/kernels/cuda/fmha_fwd_sm70.cuh"
#include "fastattn/kernels/cuda/fmha_launch.h"

namespace fastattn::kernels::cuda {

// kSwizzle = false gives the plain row-major layout, kept for the bank-conflict comparison.
template <int kHeadDim, bool kSwizzle>
void launch_fmha_sm70(const FmhaDeviceParams& p, cudaStream_t stream) {
  static_assert(kHeadDim <= 128, "the 884 path supports head dims up to 128");
  using T = FmhaTraitsSm70<__half, kHeadDim, 64, 4, kSwizzle>;
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
