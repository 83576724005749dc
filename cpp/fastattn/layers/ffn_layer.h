// FfnLayer: up (or fused gate_up) projection, activation (SwiGLU, GeGLU or plain GeLU), down
// projection (row-parallel).
#pragma once

#include "fastattn/core/allocator.h"
#include "fastattn/core/context.h"

namespace fastattn::layers {

enum class FfnActivation { kSilu, kGelu, kGeluTanh };

struct FfnParams {
  int64_t intermediate = 0;  // I on this rank
  bool gated = true;         // true: act(gate) * up from a fused [2I, H] weight; false: act(up)
  FfnActivation activation = FfnActivation::kSilu;
};

struct FfnWeights {
  Tensor up_weight;    // gated: gate_up [2I, H] (gate rows first); else up [I, H]
  Tensor up_bias;      // [2I] / [I] or undefined
  Tensor down_weight;  // [H, I]
  Tensor down_bias;    // [H] or undefined
};

struct FfnScratch {
  explicit FfnScratch(Allocator* a = host_allocator())
      : up(a, DType::kFloat32, {0}), act(a, DType::kFloat32, {0}) {}
  OwnedTensor up;   // [T, 2I] or [T, I]
  OwnedTensor act;  // [T, I] (gated only)
};

class FfnLayer {
 public:
  FfnLayer(const FfnParams& p, const FfnWeights& w);
  // x: [T, H] (normalised); out: [T, H] (before the residual add); activation dtype.
  void forward(const Context& ctx, const Tensor& x, FfnScratch& scratch, Tensor& out) const;

 private:
  FfnParams p_;
  FfnWeights w_;
};

}  // namespace fastattn::layers
