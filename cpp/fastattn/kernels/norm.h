// RMSNorm and LayerNorm over the last dimension, float32 activations, weights of any float dtype.
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
// out may alias x. RMSNorm: x * rsqrt(mean(x^2) + eps) * weight (Hugging Face's float32 order);
// LayerNorm: (x - mean) * rsqrt(var + eps) * weight + bias (biased variance). Statistics are
// accumulated in double. A bias with RMSNorm throws InvalidArgument.
void norm(const Context& ctx, const NormParams& p, const Tensor& x, const Tensor& weight,
          const Tensor& bias, Tensor& out);

// Fused residual add: residual += x, then out = norm(residual). residual, x, out: float32 [T, H].
void add_norm(const Context& ctx, const NormParams& p, Tensor& residual, const Tensor& x,
              const Tensor& weight, const Tensor& bias, Tensor& out);

}  // namespace fastattn::kernels
