// CUDA entry points of linear() and add_bias() (kernels/gemm.h), called by the public functions
// when the tensors live on a GPU. CUDA specifics are documented in gemm.h.
#pragma once

#include "fastattn/core/context.h"
#include "fastattn/core/tensor.h"

namespace fastattn::kernels::cuda {

void linear_cuda(const Context& ctx, const Tensor& x, const Tensor& w, const Tensor& bias,
                 Tensor& y);

void add_bias_cuda(const Context& ctx, const Tensor& bias, Tensor& y);

}  // namespace fastattn::kernels::cuda
