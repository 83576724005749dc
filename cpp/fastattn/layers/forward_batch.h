// ForwardBatch: what one forward pass over a varlen batch needs to know besides the activations.
// The tokens of sequence b are rows cu_seqlens_q[b] .. cu_seqlens_q[b+1] of every activation.
// The index tensors live on the device the model runs on.
#pragma once

#include <cstdint>

#include "fastattn/core/tensor.h"

namespace fastattn::layers {

struct ForwardBatch {
  int64_t num_tokens = 0;  // T
  int num_seqs = 0;        // B
  Tensor token_ids;        // int32 [T]
  Tensor positions;        // int32 [T]: position of each token in its sequence
  Tensor slot_mapping;     // int32 [T]: KV-cache slot each token's K/V is written to
  Tensor cu_seqlens_q;     // int32 [B + 1]
  Tensor block_table;      // int32 [B, max_blocks]
  Tensor seqlens_k;        // int32 [B]: tokens of each sequence in the cache, this batch included
  Tensor cu_seqlens_k;     // int32 [B + 1]: prefix sums of seqlens_k
  // Host copies of the tables above (the same tensors on the CPU), for host-side planning such
  // as gathering paged KV into contiguous staging.
  Tensor block_table_host;
  Tensor seqlens_k_host;
  // Host-side maxima of the index tensors above: GPU kernels size their grids from them instead
  // of reading the (device) index tensors back. 0 = unknown.
  int max_seqlen_q = 0;
  int max_seqlen_k = 0;
  // The longest sequence after this pass (max position + 1): dynamic-NTK RoPE's seq_len.
  int64_t max_total_len = 0;
  // Every sequence starts at position 0 in this batch (a first prefill chunk): attention needs
  // only the batch's own K/V, so a GPU can run the prefill kernel on them directly.
  bool no_cached_prefix = false;
  // Split count for the split-KV decode kernel (FmhaParams::num_splits; 0 = its heuristic). A
  // graph-captured decode step fixes it, since the captured launches cannot change it.
  int decode_num_splits = 0;

  // Two-tier KV cache (kvcache/spill_manager.h): keys 0 .. host_seqlens_k[b] of sequence b are in
  // the host pool (blocks host_block_table[b]); seqlens_k and block_table above then describe
  // only the device part that follows. Always host tensors; undefined when nothing is spilled.
  Tensor host_seqlens_k;     // int32 [B]
  Tensor host_block_table;   // int32 [B, max_host_blocks]
  Tensor host_cu_seqlens_q;  // int32 [B + 1]: cu_seqlens_q on the host
  Tensor host_cu_seqlens_k;  // int32 [B + 1]: prefix sums of host_seqlens_k
  // host_cu_seqlens_k on the model's device (GPU batches that stream the host part).
  Tensor host_cu_seqlens_k_dev;
  int max_host_seqlen_k = 0;
  // How attention reads the host part: on the CPU where the blocks are, or streamed to the
  // device's staging buffer and computed there (kernels/attention: prefill speed).
  enum class SpillPath { kCpu, kStream } spill_path = SpillPath::kCpu;
  bool has_host_kv() const { return host_seqlens_k.defined(); }
  // Keys in the device part over all sequences (host-side value).
  int64_t cu_seqlens_k_total() const { return cu_seqlens_k_host_total; }
  int64_t cu_seqlens_k_host_total = 0;
};

}  // namespace fastattn::layers
