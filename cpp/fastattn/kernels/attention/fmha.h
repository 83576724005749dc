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
// CUDA kernels (tensors on a GPU; q, k, v and out of one dtype, 16-byte aligned rows): the
// FlashAttention-2 kernel (contiguous fp16 / bf16 KV, prefill) and the split-KV decode kernel
// (paged or contiguous KV, fp16 / bf16 / fp32, head dims 64, 80, 96, 128, 256; cuts each
// sequence's keys into num_splits parts on different CTAs and merges them by log-sum-exp), for
// the head dims the build was configured with (FASTATTN_CUDA_HEAD_DIMS). See `impl` below for
// which runs. On the GPU the index tensors' values (cu_seqlens, block_table,
// seqlens_k) are not checked (that would read device memory): they are the caller's
// responsibility, as max_seqlen_q is.
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

  // GPU only.
  // max_seqlen_q: the longest query sequence (0 = read cu_seqlens_q back from the device, a
  //   synchronising copy). Must not be smaller than the true value (rows past it stay unwritten).
  // max_seqlen_k: the longest key sequence, a hint for the split-KV decode kernel's split count
  //   (0 = read seqlens_k / cu_seqlens_k back when the heuristic needs it, a synchronising copy;
  //   a wrong value costs speed, never correctness).
  // num_splits: how many parts the decode kernel cuts each sequence's key range into, merged by
  //   log-sum-exp (0 = a heuristic from the SM count, batch x KV heads and max_seqlen_k;
  //   1 = no split; at most kMaxNumSplits).
  // impl: which kernel runs (parsed and decided in one place: choose_attention_kernel,
  //   kernels/attention/attention_dispatch.h; a kernel the call or the build cannot run is an
  //   InvalidArgument saying why).
  //   "auto"   paged KV, float32, or few queries per sequence (max_seqlen_q <= 16 and
  //            max_seqlen_q x Hq / Hk <= 32): the split-KV decode kernel; otherwise the
  //            FlashAttention-2 kernel on the newest MMA path compiled for the device
  //   "884" | "1688" | "16816"  that FlashAttention-2 MMA path (to test every path on one GPU;
  //            contiguous fp16 / bf16 KV only)
  //   "884-plain"  the 884 path with a plain (unswizzled) shared-memory layout: the baseline of
  //            the Volta layout's bank-conflict measurement (tests/gpu/small_case.py)
  //   "decode" the split-KV decode kernel (any layout, fp16 / bf16 / fp32)
  //   "decode-async" | "decode-regstage"  the decode kernel with its cp.async (sm_80+) or its
  //            register-staged (sm_70 / sm_75, also the default on sm_90) copies, to test both
  //            paths on one GPU
  //   On CPU tensors only "auto" (the CPU kernel) is accepted.
  int max_seqlen_q = 0;
  int max_seqlen_k = 0;
  int num_splits = 0;
  std::string impl = "auto";
};

constexpr int kMaxNumSplits = 1024;

// Validates every tensor (dtype, shape, offsets) and throws InvalidArgument naming the one at
// fault; then runs on the device the tensors live on.
void fmha_forward(const Context& ctx, const FmhaParams& p);

}  // namespace fastattn::kernels
