// CUDA entry point of sample() (internal: called by kernels/sampling.cc once it has checked
// shapes, dtypes, devices and every row's parameters).
#pragma once

#include <cstdint>
#include <vector>

#include "fastattn/core/context.h"
#include "fastattn/core/tensor.h"
#include "fastattn/kernels/sampling.h"

namespace fastattn::kernels::cuda {

void sample_cuda(const Context& ctx, const Tensor& logits,
                 const std::vector<SamplingParams>& params, const std::vector<uint64_t>& steps,
                 Tensor& out);
// sample_prepared(): rows read from device memory (checked by the caller).
void sample_prepared_cuda(const Context& ctx, const Tensor& logits, const Tensor& rows,
                          Tensor& out);

}  // namespace fastattn::kernels::cuda
