// Activations and element-wise ops.
//
// Where they run: on the device the first tensor argument lives on; every tensor of a call must
// be there (else InvalidArgument naming the tensor).
//   CPU:  float32. Relative error is a few ulp (~1e-6) over the whole float range; only
//         tanh-GELU's far negative tail, where the function is ill-conditioned in float32,
//         reaches ~1e-6 * |u| (u its tanh argument).
//   CUDA: float32, float16 or bfloat16, every operand of one dtype; float32 arithmetic (CUDA's
//         expf / erfcf, a few ulp) rounded once to the storage dtype; 16-byte vector accesses
//         where the rows' alignment allows. Enqueued on ctx.stream.
// Rows may be strided (last dimension contiguous); on CUDA the leading dimensions of gelu / add
// operands must merge into evenly strided rows (true for contiguous tensors and row slices).
#pragma once

#include "fastattn/core/context.h"
#include "fastattn/core/tensor.h"

namespace fastattn::kernels {

// out[T, I] = silu(gate_up[:, :I]) * gate_up[:, I:2I] (gate and up fused in one [T, 2I] buffer).
void swiglu(const Context& ctx, const Tensor& gate_up, Tensor& out);

enum class GeluApprox { kErf, kTanh };

// out[T, I] = gelu(gate_up[:, :I]) * gate_up[:, I:2I]: GeGLU, in swiglu's fused layout.
// out must not overlap gate_up's up half.
void geglu(const Context& ctx, const Tensor& gate_up, Tensor& out,
           GeluApprox approx = GeluApprox::kErf);

// out = gelu(x), same shape; out may alias x.
void gelu(const Context& ctx, const Tensor& x, Tensor& out, GeluApprox approx = GeluApprox::kErf);

// out = a + b (same shape); out may alias a or b.
void add(const Context& ctx, const Tensor& a, const Tensor& b, Tensor& out);

}  // namespace fastattn::kernels
