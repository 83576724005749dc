// The CPU implementation of RMSNorm and LayerNorm: kernels/norm.h's entry points (kernels/norm.cc)
// call these for tensors in host memory. They check their own arguments.
#pragma once

#include "fastattn/kernels/norm.h"

namespace fastattn::kernels::cpu {

void norm_cpu(const Context& ctx, const NormParams& p, const Tensor& x, const Tensor& weight,
              const Tensor& bias, Tensor& out);
void add_norm_cpu(const Context& ctx, const NormParams& p, Tensor& residual, const Tensor& x,
                  const Tensor& weight, const Tensor& bias, Tensor& out);

}  // namespace fastattn::kernels::cpu
