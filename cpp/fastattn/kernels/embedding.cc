// The device-neutral entry points of kernels/embedding.h: each picks the backend from the tensors'
// device (kernels/cuda/ for CUDA tensors in CUDA builds, else kernels/cpu/, whose checks reject
// a tensor the build cannot run).
#include "fastattn/kernels/embedding.h"

#include "fastattn/kernels/cpu/embedding_cpu.h"
#if defined(FASTATTN_WITH_CUDA)
#include "fastattn/kernels/cuda/embedding_cuda.h"
#endif

namespace fastattn::kernels {

void embedding_lookup(const Context& ctx, const Tensor& ids, const Tensor& table, Tensor& out,
                      int64_t vocab_start, bool vocab_parallel) {
#if defined(FASTATTN_WITH_CUDA)
  if (ids.device().type == DeviceType::kCUDA) {
    cuda::embedding_lookup_cuda(ctx, ids, table, out, vocab_start, vocab_parallel);
    return;
  }
#endif
  cpu::embedding_lookup_cpu(ctx, ids, table, out, vocab_start, vocab_parallel);
}

}  // namespace fastattn::kernels
