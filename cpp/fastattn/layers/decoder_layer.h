// DecoderLayer: one pre-norm transformer block.
//   h += attention(norm(h));  h += ffn(norm(h))
#pragma once

#include "fastattn/kernels/norm.h"
#include "fastattn/layers/attention_layer.h"
#include "fastattn/layers/ffn_layer.h"

namespace fastattn::layers {

struct NormWeights {
  Tensor weight;  // [H]
  Tensor bias;    // [H] (LayerNorm) or undefined
};

struct DecoderLayerParams {
  kernels::NormParams norm;
  AttentionParams attention;
  FfnParams ffn;
};

struct DecoderLayerWeights {
  NormWeights attn_norm;
  AttentionWeights attention;
  NormWeights ffn_norm;
  FfnWeights ffn;
};

struct LayerScratch {
  explicit LayerScratch(Allocator* a = host_allocator())
      : normed(a, DType::kFloat32, {0}), branch_out(a, DType::kFloat32, {0}), attention(a), ffn(a) {}
  OwnedTensor normed;      // [T, H]
  OwnedTensor branch_out;  // [T, H]
  AttentionScratch attention;
  FfnScratch ffn;
};

class DecoderLayer {
 public:
  DecoderLayer(const DecoderLayerParams& p, const DecoderLayerWeights& w);

  // hidden: [T, H], the residual stream, updated in place: float32 on the CPU, the model's dtype
  // on a GPU (every activation of the layer has hidden's dtype).
  void forward(const Context& ctx, const ForwardBatch& batch, Tensor& hidden, const LayerKv& kv,
               LayerScratch& scratch) const;

 private:
  DecoderLayerParams p_;
  DecoderLayerWeights w_;
  AttentionLayer attention_;
  FfnLayer ffn_;
};

}  // namespace fastattn::layers
