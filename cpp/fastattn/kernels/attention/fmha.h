// FastAttention forward: FlashAttention-2 (tiled over K/V with online softmax, fp32 accumulation,
// output written once, never a full score matrix) for variable-length batches, with per-tile masks.
//
// Layouts follow FlashAttention's varlen convention:
//   q, out: [total_q, Hq, D]; sequence b's queries are rows cu_seqlens_q[b] .. cu_seqlens_q[b+1].
//   Contiguous KV: k, v: [total_k, Hk, D] with cu_seqlens_k.
//   Paged KV:      k, v: [num_blocks, block_size, Hk, D] with block_table [B, max_blocks] and
//                  seqlens_k [B]; key j of sequence b is in block block_table[b][j / block_size].
// Token and head dims may be strided (views into a fused QKV buffer); the last dim is contiguous.
// Hq must be a multiple of Hk (GQA/MQA: query head h reads KV head h / (Hq / Hk)).
// CPU kernel: any head dim 1..256; float32 / float16 / bfloat16 storage, converted to float32
// per tile (float32 accumulation). Decode with few (sequence, KV head) pairs splits the key range
// over threads and merges the parts by log-sum-exp.
//
// Masks (bottom-right aligned, as with a KV cache): query i of a sequence with Sq queries and Sk
// keys sits at position i + Sk - Sq. Key j is visible if
//   causal:  j <= i + Sk - Sq
//   window:  i + Sk - Sq - window_left <= j <= i + Sk - Sq + window_right (-1 = unbounded side)
// ALiBi adds -slope[h] * |i + Sk - Sq - j| to the score. A query row with no visible key gets a
// zero output and lse = -inf.
#pragma once

#include <string>

#include "fastattn/core/context.h"
#include "fastattn/core/tensor.h"

namespace fastattn::kernels {

struct FmhaParams {
  Tensor q;    // [total_q, Hq, D]
  Tensor k;    // contiguous [total_k, Hk, D] or paged [num_blocks, block_size, Hk, D]
  Tensor v;    // same layout as k
  Tensor out;  // [total_q, Hq, D]; any float dtype (CPU: q, k / v and out may each differ)
  Tensor lse;  // optional: float32 [Hq, total_q], natural-log log-sum-exp of the scaled scores

  Tensor cu_seqlens_q;  // int32 [B + 1]
  Tensor cu_seqlens_k;  // int32 [B + 1]; contiguous KV only
  Tensor block_table;   // int32 [B, max_blocks]; paged KV only
  Tensor seqlens_k;     // int32 [B]; paged KV only

  float softmax_scale = 0.0f;  // 0 = 1 / sqrt(D)
  bool causal = false;
  int window_left = -1;
  int window_right = -1;
  Tensor alibi_slopes;  // optional float32 [Hq] or [B, Hq]

  // GPU only. max_seqlen_q: the longest query sequence (0 = read cu_seqlens_q back from the
  // device, a synchronising copy). impl: the MMA path, "auto" (the device's native one), "884",
  // "1688" or "16816" (to test every path on one GPU).
  int max_seqlen_q = 0;
  std::string impl = "auto";
};

// Validates every tensor (dtype, shape, offsets) and throws InvalidArgument naming the one at
// fault; then runs on the device the tensors live on.
void fmha_forward(const Context& ctx, const FmhaParams& p);

}  // namespace fastattn::kernels
