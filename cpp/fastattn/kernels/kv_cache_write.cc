// The device-neutral entry points of kernels/kv_cache_write.h: each picks the backend from the
// tensors' device (kernels/cuda/ for CUDA tensors in CUDA builds, else kernels/cpu/, whose checks
// reject a tensor the build cannot run).
#include "fastattn/kernels/kv_cache_write.h"

#include "fastattn/kernels/cpu/kv_cache_write_cpu.h"
#if defined(FASTATTN_WITH_CUDA)
#include "fastattn/kernels/cuda/rope_kv_cuda.h"
#endif

namespace fastattn::kernels {

void kv_cache_write(const Context& ctx, const Tensor& k_new, const Tensor& v_new, Tensor& k_cache,
                    Tensor& v_cache, const Tensor& slot_mapping) {
#if defined(FASTATTN_WITH_CUDA)
  if (!k_new.device().is_cpu_addressable()) {
    cuda::kv_cache_write_cuda(ctx, k_new, v_new, k_cache, v_cache, slot_mapping);
    return;
  }
#endif
  cpu::kv_cache_write_cpu(ctx, k_new, v_new, k_cache, v_cache, slot_mapping);
}

void rope_kv_cache_write(const Context& ctx, const RopeParams& p, Tensor& q, Tensor& k,
                         const Tensor& v, const Tensor& positions, Tensor& k_cache, Tensor& v_cache,
                         const Tensor& slot_mapping, int64_t seq_len) {
#if defined(FASTATTN_WITH_CUDA)
  if (!q.device().is_cpu_addressable()) {
    cuda::rope_kv_cache_write_cuda(ctx, p, q, k, v, positions, k_cache, v_cache, slot_mapping,
                                   seq_len);
    return;
  }
#endif
  cpu::rope_kv_cache_write_cpu(ctx, p, q, k, v, positions, k_cache, v_cache, slot_mapping, seq_len);
}

}  // namespace fastattn::kernels
