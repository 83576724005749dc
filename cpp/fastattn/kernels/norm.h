// RMSNorm and LayerNorm over the last dimension, with an optional fused residual add.
//
// Where they run: on the device the activations live on (x for norm, residual for add_norm).
//   CPU:  float32 activations; statistics accumulated in double.
//   CUDA: float32, float16 or bfloat16 activations (x, residual and out of one dtype), one CTA
//         per row, 16-byte vector accesses where the rows' alignment allows, statistics in
//         float32 (LayerNorm's variance in two passes), the result rounded once to the
//         activation dtype. Enqueued on ctx.stream; never synchronises the host.
// Both: weight / bias of any float dtype (float32 / float16 / bfloat16, contiguous [H]), on the
// activations' device; a tensor on another device throws InvalidArgument naming it.
#pragma once

#include "fastattn/core/context.h"
#include "fastattn/core/tensor.h"

namespace fastattn::kernels {

enum class NormType { kRMSNorm, kLayerNorm };

struct NormParams {
  NormType type = NormType::kRMSNorm;
  float eps = 1e-6f;
};

// out[T, H] = norm(x[T, H]) * weight[H] (+ bias[H], LayerNorm only; bias may be undefined).
// out may alias x (the same elements; a partial overlap is undefined). Rows may be strided (last
// dimension contiguous). RMSNorm: x * rsqrt(mean(x^2) + eps) * weight (Hugging Face's float32
// order); LayerNorm: (x - mean) * rsqrt(var + eps) * weight + bias (biased variance). A bias
// with RMSNorm throws InvalidArgument.
void norm(const Context& ctx, const NormParams& p, const Tensor& x, const Tensor& weight,
          const Tensor& bias, Tensor& out);

// Fused residual add: residual += x, then out = norm(residual). residual, x, out: [T, H] of one
// dtype (float32 on the CPU). On CUDA the sum is rounded to the activation dtype when stored,
// and the norm reads that stored value (what an unfused add then norm would compute).
// out may alias x or residual.
void add_norm(const Context& ctx, const NormParams& p, Tensor& residual, const Tensor& x,
              const Tensor& weight, const Tensor& bias, Tensor& out);

}  // namespace fastattn::kernels
