#include "fastattn/layers/decoder_layer.h"

#include "fastattn/kernels/activation.h"

namespace fastattn::layers {

DecoderLayer::DecoderLayer(const DecoderLayerParams& p, const DecoderLayerWeights& w)
    : p_(p), w_(w), attention_(p.attention, w.attention), ffn_(p.ffn, w.ffn) {}

void DecoderLayer::forward(const Context& ctx, const ForwardBatch& batch, Tensor& hidden,
                           const LayerKv& kv, LayerScratch& scratch, const LayerLink& link) const {
  const std::vector<int64_t> shape = hidden.shape();
  // Same shape as in the previous layer of this forward: resize keeps the buffer, so a normed
  // input the previous layer wrote (link.input_normed) is still there.
  FA_ASSERT(!link.input_normed || (scratch.normed.view().shape() == shape &&
                                   scratch.normed.view().dtype() == hidden.dtype()),
            "decoder layer: the linked normed input has another shape than hidden");
  scratch.normed.resize(hidden.dtype(), shape);
  scratch.branch_out.resize(hidden.dtype(), shape);
  Tensor& normed = scratch.normed.view();
  Tensor& branch = scratch.branch_out.view();

  if (!link.input_normed) {
    kernels::norm(ctx, p_.norm, hidden, w_.attn_norm.weight, w_.attn_norm.bias, normed);
  }
  attention_.forward(ctx, batch, normed, kv, scratch.attention, branch);
  // hidden += attention output; normed = ffn_norm(hidden)
  kernels::add_norm(ctx, p_.norm, hidden, branch, w_.ffn_norm.weight, w_.ffn_norm.bias, normed);
  ffn_.forward(ctx, normed, scratch.ffn, branch);
  if (link.next != nullptr) {  // hidden += ffn output; normed = the next layer's attn_norm(hidden)
    const NormWeights& n = link.next->w_.attn_norm;
    kernels::add_norm(ctx, link.next->p_.norm, hidden, branch, n.weight, n.bias, normed);
  } else {
    kernels::add(ctx, hidden, branch, hidden);
  }
}

}  // namespace fastattn::layers
