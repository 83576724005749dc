// Host-side interface of the CUDA FastAttention forward (FlashAttention-2) kernels.
// fmha.cc validates FmhaParams (shapes, dtypes) and calls fmha_forward_cuda, which picks a
// compiled instance from the registry by (MMA implementation, head dim, dtype).
#pragma once

#include <string>
#include <vector>

#include "fastattn/core/context.h"
#include "fastattn/kernels/attention/fmha.h"
#include "fastattn/kernels/attention/fmha_shape.h"

namespace fastattn::kernels::cuda {

// The MMA instruction shape a kernel instance is built on.
//   k884   mma.sync.m8n8k4    Volta (sm_70); emulated on sm_80+ (numerics only, slow)
//   k1688  mma.sync.m16n8k8   Turing (sm_75) and later
//   k16816 mma.sync.m16n8k16  Ampere (sm_80) and later
//   kAuto  the native one for the device
//   k884Plain  the 884 path with a plain row-major shared-memory layout instead of the swizzled
//          one: built only with FASTATTN_CUDA_ALL_IMPLS, to measure the layout's bank conflicts
enum class MmaImpl { kAuto = 0, k884 = 1, k1688 = 2, k16816 = 3, k884Plain = 4 };

// "auto" | "884" | "1688" | "16816" | "884-plain"
MmaImpl parse_mma_impl(const std::string& name);
const char* mma_impl_name(MmaImpl impl);


// Runs the forward pass on p's CUDA tensors on ctx.stream. p.max_seqlen_q = 0 reads
// cu_seqlens_q back from the device (a synchronising copy). Throws InvalidArgument naming the
// missing instance (impl, arch, head dim, dtype) when the build does not contain it.
void fmha_forward_cuda(const Context& ctx, const FmhaParams& p, const FmhaShape& shape,
                       MmaImpl impl);

// The instances compiled into this build, as "16816/hd128/float16" strings (for reports).
std::vector<std::string> fmha_cuda_instances();

}  // namespace fastattn::kernels::cuda
