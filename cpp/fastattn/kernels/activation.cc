// The device-neutral entry points of kernels/activation.h: each picks the backend from the tensors'
// device (kernels/cuda/ for CUDA tensors in CUDA builds, else kernels/cpu/, whose checks reject
// a tensor the build cannot run).
#include "fastattn/kernels/activation.h"

#include "fastattn/kernels/cpu/activation_cpu.h"
#if defined(FASTATTN_WITH_CUDA)
#include "fastattn/kernels/cuda/activation_cuda.h"
#endif

namespace fastattn::kernels {

void swiglu(const Context& ctx, const Tensor& gate_up, Tensor& out) {
#if defined(FASTATTN_WITH_CUDA)
  if (gate_up.device().type == DeviceType::kCUDA) {
    cuda::swiglu_cuda(ctx, gate_up, out);
    return;
  }
#endif
  cpu::swiglu_cpu(ctx, gate_up, out);
}

void geglu(const Context& ctx, const Tensor& gate_up, Tensor& out, GeluApprox approx) {
#if defined(FASTATTN_WITH_CUDA)
  if (gate_up.device().type == DeviceType::kCUDA) {
    cuda::geglu_cuda(ctx, gate_up, out, approx);
    return;
  }
#endif
  cpu::geglu_cpu(ctx, gate_up, out, approx);
}

void gelu(const Context& ctx, const Tensor& x, Tensor& out, GeluApprox approx) {
#if defined(FASTATTN_WITH_CUDA)
  if (x.device().type == DeviceType::kCUDA) {
    cuda::gelu_cuda(ctx, x, out, approx);
    return;
  }
#endif
  cpu::gelu_cpu(ctx, x, out, approx);
}

void add(const Context& ctx, const Tensor& a, const Tensor& b, Tensor& out) {
#if defined(FASTATTN_WITH_CUDA)
  if (a.device().type == DeviceType::kCUDA) {
    cuda::add_cuda(ctx, a, b, out);
    return;
  }
#endif
  cpu::add_cpu(ctx, a, b, out);
}

}  // namespace fastattn::kernels
