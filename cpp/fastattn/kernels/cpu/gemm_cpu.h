// The CPU implementation of the linear layer (y = x w^T + bias) and the bias add: kernels/gemm.h's
// entry points (kernels/gemm.cc) call these for tensors in host memory. They check their own
// arguments.
#pragma once

#include "fastattn/kernels/gemm.h"

namespace fastattn::kernels::cpu {

void linear_cpu(const Context& ctx, const Tensor& x, const Tensor& w, const Tensor& bias,
                Tensor& y);
void add_bias_cpu(const Context& ctx, const Tensor& bias, Tensor& y);

}  // namespace fastattn::kernels::cpu
