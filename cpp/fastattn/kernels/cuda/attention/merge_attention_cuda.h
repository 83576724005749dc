// CUDA side of kernels/attention/merge.h (shapes checked by the caller,
// kernels/attention/merge_attention.cc).
#pragma once

#include "fastattn/core/context.h"
#include "fastattn/core/tensor.h"

namespace fastattn::kernels::cuda {

void merge_attention(const Context& ctx, const Tensor& out_a, const Tensor& lse_a,
                     const Tensor& out_b, const Tensor& lse_b, Tensor& out, Tensor* lse_out);

}  // namespace fastattn::kernels::cuda
