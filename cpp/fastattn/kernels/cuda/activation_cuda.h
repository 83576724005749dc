// CUDA entry points of the activations (kernels/activation.h), called by the public functions
// when the tensors live on a GPU. CUDA specifics are documented in activation.h.
#pragma once

#include "fastattn/core/context.h"
#include "fastattn/core/tensor.h"
#include "fastattn/kernels/activation.h"

namespace fastattn::kernels::cuda {

void swiglu_cuda(const Context& ctx, const Tensor& gate_up, Tensor& out);
void geglu_cuda(const Context& ctx, const Tensor& gate_up, Tensor& out, GeluApprox approx);
void gelu_cuda(const Context& ctx, const Tensor& x, Tensor& out, GeluApprox approx);
void add_cuda(const Context& ctx, const Tensor& a, const Tensor& b, Tensor& out);

}  // namespace fastattn::kernels::cuda
