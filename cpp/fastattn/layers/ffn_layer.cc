#include "fastattn/layers/ffn_layer.h"

#include "fastattn/core/error.h"
#include "fastattn/kernels/activation.h"
#include "fastattn/kernels/gemm.h"
#include "fastattn/layers/parallel.h"

namespace fastattn::layers {

FfnLayer::FfnLayer(const FfnParams& p, const FfnWeights& w) : p_(p), w_(w) {
  FA_CHECK(p.gated || p.activation != FfnActivation::kSilu,
           "FFN: silu is supported as SwiGLU only (gated_ffn = true)");
}

void FfnLayer::forward(const Context& ctx, const Tensor& x, FfnScratch& scratch,
                       Tensor& out) const {
  const int64_t T = x.size(0);
  const int64_t I = p_.intermediate;
  if (!p_.gated) {
    scratch.up.resize(x.dtype(), {T, I});
    kernels::linear(ctx, x, w_.up_weight, w_.up_bias, scratch.up.view());
    const auto approx = p_.activation == FfnActivation::kGeluTanh ? kernels::GeluApprox::kTanh
                                                                  : kernels::GeluApprox::kErf;
    kernels::gelu(ctx, scratch.up.view(), scratch.up.view(), approx);
    row_parallel_linear(ctx, scratch.up.view(), w_.down_weight, w_.down_bias, out);
    return;
  }
  scratch.up.resize(x.dtype(), {T, 2 * I});
  kernels::linear(ctx, x, w_.up_weight, w_.up_bias, scratch.up.view());
  scratch.act.resize(x.dtype(), {T, I});
  if (p_.activation == FfnActivation::kSilu) {
    kernels::swiglu(ctx, scratch.up.view(), scratch.act.view());
  } else {
    const auto approx = p_.activation == FfnActivation::kGeluTanh ? kernels::GeluApprox::kTanh
                                                                  : kernels::GeluApprox::kErf;
    kernels::geglu(ctx, scratch.up.view(), scratch.act.view(), approx);
  }
  row_parallel_linear(ctx, scratch.act.view(), w_.down_weight, w_.down_bias, out);
}

}  // namespace fastattn::layers
