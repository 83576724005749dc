// Definition of launch_fmha for the m16n8 family, included only by generated instance files.
// Tile shapes per (implementation, head dim): kBlockM x kBlockN with 4 warps. Shared memory is
// (kBlockM + 2 kBlockN) * (D + 8) * 2 bytes, kept under each arch's per-block budget
// (sm_75: 64 KB; sm_80+: 99 KB+).
#pragma once

#include "fastattn/core/cuda/cuda_check.h"
#include "fastattn/kernels/cuda/attention/fmha/fmha_fwd_kernel.cuh"
#include "fastattn/kernels/cuda/attention/fmha/fmha_launch.h"

namespace fastattn::kernels::cuda {

template <class Mma, int kHeadDim>
struct FmhaTileShape;

// Ampere+: 128-row query blocks (two m16 tiles per warp) up to D = 128, as FlashAttention-2.
// (128-key blocks at D = 64 spill 112 bytes per thread on sm_90: not used.)
template <int D>
struct FmhaTileShape<Mma16816, D> {
  static constexpr int kBlockM = D <= 128 ? 128 : 64;
  static constexpr int kBlockN = D <= 128 ? 64 : 32;
};

// Turing: 64 KB of shared memory per block at most.
template <int D>
struct FmhaTileShape<Mma1688, D> {
  static constexpr int kBlockM = D <= 64 ? 128 : 64;
  static constexpr int kBlockN = D <= 128 ? 64 : 16;
};

template <class Mma, typename Element, int kHeadDim>
void launch_fmha(const FmhaDeviceParams& p, cudaStream_t stream) {
  using Shape = FmhaTileShape<Mma, kHeadDim>;
  using T = FmhaTraits<Mma, Element, kHeadDim, Shape::kBlockM, Shape::kBlockN, 4>;
  auto kernel = fmha_fwd_kernel<T>;
  // Fails with "invalid device function" when this instance has no image for the current GPU.
  FA_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     static_cast<int>(T::kSmemBytes)));
  const dim3 grid((p.max_seqlen_q + T::kBlockM - 1) / T::kBlockM, p.num_heads_q, p.batch);
  kernel<<<grid, T::kThreads, T::kSmemBytes, stream>>>(p);
  FA_CUDA_CHECK_LAUNCH("fmha_fwd_kernel");
}

}  // namespace fastattn::kernels::cuda
