// CUDA side of core/copy.h.
#include <cuda_runtime.h>

#include "fastattn/core/context.h"
#include "fastattn/kernels/cuda/cuda_check.h"

namespace fastattn::detail {

void cuda_copy_bytes(const Context& ctx, void* dst, const void* src, size_t nbytes) {
  FA_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDefault,
                                static_cast<cudaStream_t>(ctx.stream)));
}

void cuda_synchronize(const Context& ctx) {
  FA_CUDA_CHECK(cudaStreamSynchronize(static_cast<cudaStream_t>(ctx.stream)));
}

}  // namespace fastattn::detail
