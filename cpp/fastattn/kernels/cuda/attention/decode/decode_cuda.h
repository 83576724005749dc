// Host side of the split-KV ("flash-decoding") CUDA attention: few query rows per sequence
// against a long paged or contiguous KV cache (decode, chunked prefill over a paged cache, and
// float32 models). fmha.cc validates FmhaParams and routes here when choose_attention_kernel
// picks a decode kernel (see FmhaParams::impl).
#pragma once

#include <cstdint>

#include "fastattn/core/context.h"
#include "fastattn/kernels/attention/attention_dispatch.h"
#include "fastattn/kernels/attention/fmha.h"
#include "fastattn/kernels/attention/fmha_shape.h"

namespace fastattn::kernels::cuda {

// Whether the decode kernel has instances for this dtype and head dim.
bool decode_supports(DType dtype, int head_dim);

// Runs the split-KV attention on p's CUDA tensors on ctx.stream with decode kernel `kernel`
// (kDecodeAsync / kDecodeRegStaged, as choose_attention_kernel returned it). The key range of each
// (sequence, KV head, query tile) is cut into p.num_splits parts (0 = heuristic: whole waves of
// resident CTAs, at least 2 x SMs CTAs, each part >= 256 keys), each written as an fp32 partial
// with its log-sum-exp into scratch from ctx.allocator (device_allocator(q's device) if that is
// not on q's device); the last part of a tile to finish merges them (very large launches: a
// second kernel does). With one part the kernel writes out / lse itself. Scratch is freed when
// the call returns: safe with the stream-ordered caching device allocator as long as the next
// user of the block runs on the same stream.
// shape.max_seqlen_q = 0 reads cu_seqlens_q back (a synchronising copy on ctx.stream).
void decode_forward_cuda(const Context& ctx, const FmhaParams& p, const FmhaShape& shape,
                         AttentionKernel kernel);

// What decides a decode launch's split count (FmhaParams of the paged decode path).
struct DecodeSplitQuery {
  DType dtype = DType::kFloat16;
  int head_dim = 0;
  int64_t batch = 0;
  int num_heads_q = 0;
  int num_heads_k = 0;
  int max_seqlen_q = 1;
  int max_seqlen_k = 0;
  int window_left = -1;
  bool causal = true;
};

// The split count decode_forward_cuda picks with num_splits = 0 (with the device's preferred copy
// path) for a launch of this shape on `device`.
int decode_num_splits(int device, const DecodeSplitQuery& q);

// Zeroes the arrival counters the split kernels of ctx.stream use (stream-ordered). A
// graph-captured decode step starts with it, so each replay starts from zero whatever happened
// before (every launch leaves them zero, but a replay must not depend on it).
void decode_reset_split_counters(const Context& ctx);

// The longest sequence in a device index tensor: lengths (seqlens_k) or cumulative offsets
// (cu_seqlens, batch + 1 entries). A synchronising copy on ctx.stream.
int device_max_seqlen(const Context& ctx, const Tensor& index, bool cumulative);

}  // namespace fastattn::kernels::cuda
