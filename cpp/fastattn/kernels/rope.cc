// The device-neutral entry points of kernels/rope.h: each picks the backend from the tensors'
// device (kernels/cuda/ for CUDA tensors in CUDA builds, else kernels/cpu/, whose checks reject
// a tensor the build cannot run).
#include "fastattn/kernels/rope.h"

#include "fastattn/kernels/cpu/rope_cpu.h"
#if defined(FASTATTN_WITH_CUDA)
#include "fastattn/kernels/cuda/rope_kv_cuda.h"
#endif

namespace fastattn::kernels {

void apply_rope(const Context& ctx, const RopeParams& p, Tensor& x, const Tensor& positions,
                int64_t seq_len) {
#if defined(FASTATTN_WITH_CUDA)
  if (!x.device().is_cpu_addressable()) {
    cuda::apply_rope_cuda(ctx, p, x, positions, seq_len);
    return;
  }
#endif
  cpu::apply_rope_cpu(ctx, p, x, positions, seq_len);
}

}  // namespace fastattn::kernels
