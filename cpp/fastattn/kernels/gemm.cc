// The device-neutral entry points of kernels/gemm.h: each picks the backend from the tensors'
// device (kernels/cuda/ for CUDA tensors in CUDA builds, else kernels/cpu/, whose checks reject
// a tensor the build cannot run).
#include "fastattn/kernels/gemm.h"

#include "fastattn/kernels/cpu/gemm_cpu.h"
#if defined(FASTATTN_WITH_CUDA)
#include "fastattn/kernels/cuda/linear_cuda.h"
#endif

namespace fastattn::kernels {

void linear(const Context& ctx, const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& y) {
#if defined(FASTATTN_WITH_CUDA)
  if (x.device().type == DeviceType::kCUDA) {
    cuda::linear_cuda(ctx, x, w, bias, y);
    return;
  }
#endif
  cpu::linear_cpu(ctx, x, w, bias, y);
}

void add_bias(const Context& ctx, const Tensor& bias, Tensor& y) {
#if defined(FASTATTN_WITH_CUDA)
  if (y.device().type == DeviceType::kCUDA) {
    cuda::add_bias_cuda(ctx, bias, y);
    return;
  }
#endif
  cpu::add_bias_cpu(ctx, bias, y);
}

}  // namespace fastattn::kernels
