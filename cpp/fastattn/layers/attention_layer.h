// AttentionLayer: fused QKV projection, RoPE on Q and K (unless the model has none), KV-cache
// write, paged FlashAttention over the cache (causal, bottom-right aligned, optional sliding
// window), output projection.
#pragma once

#include "fastattn/core/allocator.h"
#include "fastattn/core/context.h"
#include "fastattn/core/copy.h"
#include "fastattn/kernels/rope.h"
#include "fastattn/layers/forward_batch.h"

namespace fastattn::layers {

struct AttentionParams {
  int num_heads = 0;     // query heads on this rank
  int num_kv_heads = 0;  // KV heads on this rank
  int head_dim = 0;
  // false: the model has no rotary positions (learned absolute positions are added to the
  // embedding instead); q and k are used as projected and `rope` is ignored.
  bool rotary = true;
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
      : qkv(a, DType::kFloat32, {0}),
        attn(a, DType::kFloat32, {0}),
        lse(a, DType::kFloat32, {0}),
        part(a, DType::kFloat32, {0}),
        part_lse(a, DType::kFloat32, {0}),
        host_q(pinned_host_allocator(), DType::kFloat32, {0}),
        host_part(pinned_host_allocator(), DType::kFloat32, {0}),
        host_lse(pinned_host_allocator(), DType::kFloat32, {0}),
        stage_k(a, DType::kFloat32, {0}),
        stage_v(a, DType::kFloat32, {0}),
        dense_k(a, DType::kFloat32, {0}),
        dense_v(a, DType::kFloat32, {0}) {}
  OwnedTensor qkv;   // [T, (hq + 2 hk) * D]
  OwnedTensor attn;  // [T, hq, D]
  // Spilled KV only: the device part's lse, the host part's output and lse (on the model's
  // device) and, on a GPU, their host-side staging (pinned).
  OwnedTensor lse, part, part_lse, host_q, host_part, host_lse;
  OwnedTensor stage_k, stage_v;  // streamed host blocks of one layer, contiguous
  OwnedTensor dense_k, dense_v;  // the device part of a chunked prefill, gathered contiguous
};

// One layer's KV cache: the device pool and, with spilled KV, the host pool (host memory).
struct LayerKv {
  Tensor* k = nullptr;
  Tensor* v = nullptr;
  const Tensor* host_k = nullptr;
  const Tensor* host_v = nullptr;
};

class AttentionLayer {
 public:
  AttentionLayer(const AttentionParams& p, const AttentionWeights& w) : p_(p), w_(w) {}

  // x: [T, H] (normalised input); out: [T, H] (projection output, before the residual add), in
  // the activation dtype. Writes this batch's K and V into the device pool at batch.slot_mapping.
  void forward(const Context& ctx, const ForwardBatch& batch, const Tensor& x, const LayerKv& kv,
               AttentionScratch& scratch, Tensor& out) const;

 private:
  // Spilled KV, streaming: copies this layer's host blocks to the device (contiguous staging)
  // and attends to them there with the prefill kernel, then merges into `out`.
  void stream_host_part(const Context& ctx, const ForwardBatch& batch, const Tensor& q,
                        const LayerKv& kv, AttentionScratch& scratch, const Tensor& out) const;
  // Spilled KV: on a GPU, queues q's copy to the host and records `done` after it.
  void stage_query_on_host(const Context& ctx, const Tensor& q, AttentionScratch& scratch,
                           StreamEvent& done) const;
  // Attention over the host part of a spilled cache, merged into `out` by log-sum-exp. It runs
  // on the CPU: on a GPU cooperatively (the CPU reads the host blocks while the GPU computes the
  // device part; only q and the partial output cross the bus).
  void attend_host_part(const Context& ctx, const ForwardBatch& batch, const Tensor& q,
                        const LayerKv& kv, AttentionScratch& scratch, StreamEvent& q_on_host,
                        const Tensor& out) const;

  AttentionParams p_;
  AttentionWeights w_;
};

}  // namespace fastattn::layers
