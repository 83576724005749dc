// The CPU sampler behind kernels/sampling.h's sample(); kernels/sampling.cc has checked the
// arguments (logits [B, V] float32, out [B] int32, one parameter set and step per row).
#pragma once

#include <cstdint>
#include <vector>

#include "fastattn/kernels/sampling.h"

namespace fastattn::kernels::cpu {

void sample_cpu(const Context& ctx, const Tensor& logits, const std::vector<SamplingParams>& params,
                const std::vector<uint64_t>& steps, Tensor& out);

}  // namespace fastattn::kernels::cpu
