// Plain parameters of one split-KV ("flash-decoding") attention launch, as the kernels read them.
// Filled by decode_cuda.cc from FmhaParams; shared by the split kernel and the merge kernel.
#pragma once

#include <cstdint>

namespace fastattn::kernels::cuda {

struct DecodeDeviceParams {
  const void* q;
  const void* k;
  const void* v;
  void* out;
  float* lse;  // [Hq, total_q] (natural log) or null

  // Strides in elements; the head dim is contiguous. Paged KV: k / v [num_blocks, block_size,
  // Hk, D] (block, row and head strides); contiguous KV: [total_k, Hk, D] (k_block_stride unused).
  int64_t q_row_stride, q_head_stride;
  int64_t k_block_stride, k_row_stride, k_head_stride;
  int64_t v_block_stride, v_row_stride, v_head_stride;
  int64_t o_row_stride, o_head_stride;
  int64_t lse_head_stride;

  const int32_t* cu_seqlens_q;  // [B + 1]
  const int32_t* cu_seqlens_k;  // [B + 1]; contiguous KV (null when paged)
  const int32_t* block_table;   // [B, max_blocks] (row stride block_table_stride); paged KV
  const int32_t* seqlens_k;     // [B]; paged KV
  int64_t block_table_stride;
  int block_size;   // keys per block (paged)
  int block_shift;  // log2(block_size) when it is a power of two, else -1

  int batch;
  int num_heads_q;
  int num_heads_k;
  int group;  // num_heads_q / num_heads_k: the query heads sharing one KV head
  int head_dim;
  int64_t total_q;

  // Grid: x = query tiles (of kRows (token, head) rows) x Hk, y = KV splits, z = batch.
  int num_splits;

  float scale_log2;  // softmax_scale * log2(e): q is pre-scaled by it, scores are log2-domain
  int window_left;   // -1 = unbounded; causal sets window_right = min(window_right, 0)
  int window_right;
  const float* alibi_slopes;  // null or [Hq] / [B, Hq]
  int alibi_batch_stride;

  // Split partials (num_splits > 1): fp32 out [num_splits, total_q, Hq, D] and the log2-domain
  // LSE [num_splits, total_q, Hq]; the merge kernel combines them into out / lse.
  float* part_out;
  float* part_lse;
  // Arrival counters, one per (batch, query tile x Hk), zero at launch and left zero: the last
  // split CTA of a tile merges it (null: a separate merge kernel does).
  unsigned* split_counters;
};

}  // namespace fastattn::kernels::cuda
