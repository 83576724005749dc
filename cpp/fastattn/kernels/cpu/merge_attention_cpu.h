// The CPU implementation of merge_attention (kernels/attention/merge.h). Its caller,
// kernels/attention/merge_attention.cc, checks the arguments first: out [T, H, D], lse [H, T].
#pragma once

#include "fastattn/kernels/attention/merge.h"

namespace fastattn::kernels::cpu {

void merge_attention_cpu(const Context& ctx, const Tensor& out_a, const Tensor& lse_a,
                         const Tensor& out_b, const Tensor& lse_b, Tensor& out, Tensor* lse_out);

}  // namespace fastattn::kernels::cpu
