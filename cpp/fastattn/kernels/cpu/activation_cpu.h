// The CPU implementation of SwiGLU, GeGLU, GELU and the element-wise add: kernels/activation.h's
// entry points (kernels/activation.cc) call these for tensors in host memory. They check their own
// arguments.
#pragma once

#include "fastattn/kernels/activation.h"

namespace fastattn::kernels::cpu {

void swiglu_cpu(const Context& ctx, const Tensor& gate_up, Tensor& out);
void geglu_cpu(const Context& ctx, const Tensor& gate_up, Tensor& out, GeluApprox approx);
void gelu_cpu(const Context& ctx, const Tensor& x, Tensor& out, GeluApprox approx);
void add_cpu(const Context& ctx, const Tensor& a, const Tensor& b, Tensor& out);

}  // namespace fastattn::kernels::cpu
