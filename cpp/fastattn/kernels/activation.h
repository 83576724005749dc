// Activations and element-wise ops on float32 activations.
#pragma once

#include "fastattn/core/context.h"
#include "fastattn/core/tensor.h"

namespace fastattn::kernels {

// Relative error is a few ulp (~1e-6) over the whole float range; only tanh-GELU's far negative
// tail, where the function is ill-conditioned in float32, reaches ~1e-6 * |u| (u its tanh argument).
// out[T, I] = silu(gate_up[:, :I]) * gate_up[:, I:2I] (gate and up fused in one [T, 2I] buffer).
void swiglu(const Context& ctx, const Tensor& gate_up, Tensor& out);

enum class GeluApprox { kErf, kTanh };
// out = gelu(x), float32, same shape; out may alias x.
void gelu(const Context& ctx, const Tensor& x, Tensor& out, GeluApprox approx = GeluApprox::kErf);

// out = a + b (float32, same shape); out may alias a or b.
void add(const Context& ctx, const Tensor& a, const Tensor& b, Tensor& out);

}  // namespace fastattn::kernels
