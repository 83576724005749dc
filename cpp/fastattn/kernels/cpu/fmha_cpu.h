// CPU FlashAttention-2 forward. fmha.cc validates FmhaParams and calls fmha_forward_cpu with the
// shapes it derived; nothing here re-checks user input.
#pragma once

#include <cstdint>

#include "fastattn/core/context.h"
#include "fastattn/kernels/attention/fmha.h"
#include "fastattn/kernels/attention/fmha_shape.h"

namespace fastattn::kernels::cpu {

using kernels::FmhaShape;

void fmha_forward_cpu(const Context& ctx, const FmhaParams& p, const FmhaShape& shape);

}  // namespace fastattn::kernels::cpu
