#include "fastattn/layers/decoder_layer.h"

#include "fastattn/kernels/activation.h"

namespace fastattn::layers {

DecoderLayer::DecoderLayer(const DecoderLayerParams& p, const DecoderLayerWeights& w)
    : p_(p), w_(w), attention_(p.attention, w.attention), ffn_(p.ffn, w.ffn) {}

void DecoderLayer::forward(const Context& ctx, const ForwardBatch& batch, Tensor& hidden,
                           const LayerKv& kv, LayerScratch& scratch) const {
  const std::vector<int64_t> shape = hidden.shape();
  scratch.normed.resize(hidden.dtype(), shape);
  scratch.branch_out.resize(hidden.dtype(), shape);
  Tensor& normed = scratch.normed.view();
  Tensor& branch = scratch.branch_out.view();

  kernels::norm(ctx, p_.norm, hidden, w_.attn_norm.weight, w_.attn_norm.bias, normed);
  attention_.forward(ctx, batch, normed, kv, scratch.attention, branch);
  // hidden += attention output; normed = ffn_norm(hidden)
  kernels::add_norm(ctx, p_.norm, hidden, branch, w_.ffn_norm.weight, w_.ffn_norm.bias, normed);
  ffn_.forward(ctx, normed, scratch.ffn, branch);
  kernels::add(ctx, hidden, branch, hidden);
}

}  // namespace fastattn::layers
