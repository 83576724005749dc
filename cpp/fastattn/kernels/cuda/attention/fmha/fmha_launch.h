// Declarations of the per-instance launchers. Each generated instance file (one per MMA
// implementation, head dim and dtype) defines one specialisation; the registry refers to them.
#pragma once

#include <cuda_runtime.h>

#include "fastattn/kernels/cuda/attention/fmha_device_params.h"

namespace fastattn::kernels::cuda {

struct Mma16816;
struct Mma1688;
struct Mma884;

// Launches the forward kernel of instance (Mma, Element, kHeadDim) on `stream`.
template <class Mma, typename Element, int kHeadDim>
void launch_fmha(const FmhaDeviceParams& p, cudaStream_t stream);

// The 884 path with the swizzled (kSwizzle) or the plain row-major shared-memory layout.
template <int kHeadDim, bool kSwizzle>
void launch_fmha_sm70(const FmhaDeviceParams& p, cudaStream_t stream);

}  // namespace fastattn::kernels::cuda
