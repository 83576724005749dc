// CUDA entry points of norm() / add_norm() (kernels/norm.h), called by the public functions
// when the tensors live on a GPU. Same contracts as there; CUDA specifics are documented in
// norm.h.
#pragma once

#include "fastattn/core/context.h"
#include "fastattn/core/tensor.h"
#include "fastattn/kernels/norm.h"

namespace fastattn::kernels::cuda {

void norm_cuda(const Context& ctx, const NormParams& p, const Tensor& x, const Tensor& weight,
               const Tensor& bias, Tensor& out);

void add_norm_cuda(const Context& ctx, const NormParams& p, Tensor& residual, const Tensor& x,
                   const Tensor& weight, const Tensor& bias, Tensor& out);

}  // namespace fastattn::kernels::cuda
