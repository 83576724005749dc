// CUDA side of core/copy.h.
#include <cuda_runtime.h>

#include "fastattn/core/context.h"
#include "fastattn/core/cuda/cuda_check.h"

namespace fastattn::detail {

void cuda_copy_bytes(const Context& ctx, void* dst, const void* src, size_t nbytes) {
  FA_CUDA_CHECK(
      cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDefault, static_cast<cudaStream_t>(ctx.stream)));
}

void cuda_synchronize(const Context& ctx) {
  FA_CUDA_CHECK(cudaStreamSynchronize(static_cast<cudaStream_t>(ctx.stream)));
}

void cuda_copy_2d(const Context& ctx, void* dst, size_t dpitch, const void* src, size_t spitch,
                  size_t width, size_t rows) {
  FA_CUDA_CHECK(cudaMemcpy2DAsync(dst, dpitch, src, spitch, width, rows, cudaMemcpyDefault,
                                  static_cast<cudaStream_t>(ctx.stream)));
}

void* cuda_event_record(const Context& ctx, void* event) {
  auto e = static_cast<cudaEvent_t>(event);
  if (e == nullptr) FA_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  FA_CUDA_CHECK(cudaEventRecord(e, static_cast<cudaStream_t>(ctx.stream)));
  return e;
}

void cuda_event_wait(void* event) {
  FA_CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(event)));
}

void cuda_event_destroy(void* event) { cudaEventDestroy(static_cast<cudaEvent_t>(event)); }

}  // namespace fastattn::detail
