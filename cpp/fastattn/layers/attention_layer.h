// AttentionLayer: fused QKV projection, RoPE on Q and K, KV-cache write, paged FlashAttention
// over the cache (causal, bottom-right aligned, optional sliding window), output projection.
#pragma once

#include "fastattn/core/allocator.h"
#include "fastattn/core/context.h"
#include "fastattn/kernels/rope.h"
#include "fastattn/layers/forward_batch.h"

namespace fastattn::layers {

struct AttentionParams {
  int num_heads = 0;     // query heads on this rank
  int num_kv_heads = 0;  // KV heads on this rank
  int head_dim = 0;
  kernels::RopeParams rope;
  int window_left = -1;  // -1 = no sliding window
};

struct AttentionWeights {
  Tensor qkv_weight;  // [(hq + 2 hk) * D, H]
  Tensor qkv_bias;    // [(hq + 2 hk) * D] or undefined
  Tensor o_weight;    // [H, hq * D] (row-parallel)
  Tensor o_bias;      // [H] or undefined
};

// Scratch reused across calls (grows, never shrinks).
struct AttentionScratch {
  explicit AttentionScratch(Allocator* a = host_allocator())
      : qkv(a, DType::kFloat32, {0}), attn(a, DType::kFloat32, {0}) {}
  OwnedTensor qkv;   // [T, (hq + 2 hk) * D]
  OwnedTensor attn;  // [T, hq, D]
};

class AttentionLayer {
 public:
  AttentionLayer(const AttentionParams& p, const AttentionWeights& w) : p_(p), w_(w) {}

  // x: float32 [T, H] (normalised input); out: float32 [T, H] (projection output, before the
  // residual add). Writes this batch's K and V into k_cache / v_cache at batch.slot_mapping.
  void forward(const Context& ctx, const ForwardBatch& batch, const Tensor& x, Tensor& k_cache,
               Tensor& v_cache, AttentionScratch& scratch, Tensor& out) const;

 private:
  AttentionParams p_;
  AttentionWeights w_;
};

}  // namespace fastattn::layers
