// The device-neutral entry points of kernels/norm.h: each picks the backend from the tensors'
// device (kernels/cuda/ for CUDA tensors in CUDA builds, else kernels/cpu/, whose checks reject
// a tensor the build cannot run).
#include "fastattn/kernels/norm.h"

#include "fastattn/kernels/cpu/norm_cpu.h"
#if defined(FASTATTN_WITH_CUDA)
#include "fastattn/kernels/cuda/norm_cuda.h"
#endif

namespace fastattn::kernels {

void norm(const Context& ctx, const NormParams& p, const Tensor& x, const Tensor& weight,
          const Tensor& bias, Tensor& out) {
#if defined(FASTATTN_WITH_CUDA)
  if (x.device().type == DeviceType::kCUDA) {
    cuda::norm_cuda(ctx, p, x, weight, bias, out);
    return;
  }
#endif
  cpu::norm_cpu(ctx, p, x, weight, bias, out);
}

void add_norm(const Context& ctx, const NormParams& p, Tensor& residual, const Tensor& x,
              const Tensor& weight, const Tensor& bias, Tensor& out) {
#if defined(FASTATTN_WITH_CUDA)
  if (residual.device().type == DeviceType::kCUDA) {
    cuda::add_norm_cuda(ctx, p, residual, x, weight, bias, out);
    return;
  }
#endif
  cpu::add_norm_cpu(ctx, p, residual, x, weight, bias, out);
}

}  // namespace fastattn::kernels
