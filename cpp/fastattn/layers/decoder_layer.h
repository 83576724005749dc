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

class DecoderLayer;

struct LayerScratch {
  explicit LayerScratch(Allocator* a = host_allocator())
      : normed(a, DType::kFloat32, {0}),
        branch_out(a, DType::kFloat32, {0}),
        attention(a),
        ffn(a) {}
  OwnedTensor normed;      // [T, H]
  OwnedTensor branch_out;  // [T, H]
  AttentionScratch attention;
  FfnScratch ffn;
};

// How a layer links to its neighbours in the stack: the residual add that ends a layer and the
// norm that starts the next one run as one add_norm kernel (one pass over hidden instead of two,
// one launch fewer per layer; bit for bit what the unfused pair computes).
struct LayerLink {
  bool input_normed = false;           // scratch.normed already holds attn_norm(hidden)
  const DecoderLayer* next = nullptr;  // the next layer: end with add + its attn_norm into normed
};

class DecoderLayer {
 public:
  DecoderLayer(const DecoderLayerParams& p, const DecoderLayerWeights& w);

  // hidden: [T, H], the residual stream, updated in place: float32 on the CPU, the model's dtype
  // on a GPU (every activation of the layer has hidden's dtype).
  void forward(const Context& ctx, const ForwardBatch& batch, Tensor& hidden, const LayerKv& kv,
               LayerScratch& scratch, const LayerLink& link = {}) const;

 private:
  DecoderLayerParams p_;
  DecoderLayerWeights w_;
  AttentionLayer attention_;
  FfnLayer ffn_;
};

}  // namespace fastattn::layers
