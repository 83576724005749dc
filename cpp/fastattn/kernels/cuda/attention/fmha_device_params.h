// Plain parameters of one FlashAttention-2 forward launch, as the kernels read them.
#pragma once

#include <cstdint>

namespace fastattn::kernels::cuda {

struct FmhaDeviceParams {
  const void* q;
  const void* k;
  const void* v;
  void* out;
  float* lse;  // [Hq, total_q] or null

  // Strides in elements; the head dim is contiguous.
  int64_t q_row_stride, q_head_stride;
  int64_t k_row_stride, k_head_stride;
  int64_t v_row_stride, v_head_stride;
  int64_t o_row_stride, o_head_stride;
  int64_t lse_head_stride;

  const int32_t* cu_seqlens_q;  // [B + 1]
  const int32_t* cu_seqlens_k;  // [B + 1]

  int batch;
  int num_heads_q;
  int num_heads_k;
  int head_dim;
  int max_seqlen_q;

  float scale_log2;  // softmax_scale * log2(e)
  float softmax_scale;
  int window_left;  // -1 = unbounded; causal sets window_right = 0
  int window_right;
  const float* alibi_slopes;  // null or [Hq] / [B, Hq]
  int alibi_batch_stride;
};

}  // namespace fastattn::kernels::cuda
