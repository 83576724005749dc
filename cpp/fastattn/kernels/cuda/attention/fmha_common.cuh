// Pieces shared by every FMHA mainloop: the per-CTA sequence geometry (varlen offsets, the K/V
// block range the masks leave visible) and the per-element mask / ALiBi of a score.
#pragma once

#include <cuda_runtime.h>

#include <cmath>

#include "fastattn/kernels/attention/softmax_params.h"
#include "fastattn/kernels/cuda/attention/fmha_device_params.h"

namespace fastattn::kernels::cuda {

constexpr float kLn2 = 0.6931471805599453f;

// Where this CTA's query block sits and which K/V blocks it must visit.
struct FmhaBlockInfo {
  int q_start, seqlen_q;  // rows of this sequence in q / out
  int k_start, seqlen_k;  // rows of this sequence in k / v
  int offset;             // seqlen_k - seqlen_q: bottom-right alignment of the masks
  int row_lo;             // first query row of this block (within the sequence)
  int nb_begin, nb_end;   // K/V blocks [nb_begin, nb_end) that hold a visible key
  float slope_log2;       // ALiBi slope in the log2 domain (0 without ALiBi)

  __device__ FmhaBlockInfo(const FmhaDeviceParams& p, int m_block, int head, int batch, int block_m,
                           int block_n) {
    q_start = p.cu_seqlens_q[batch];
    seqlen_q = p.cu_seqlens_q[batch + 1] - q_start;
    k_start = p.cu_seqlens_k[batch];
    seqlen_k = p.cu_seqlens_k[batch + 1] - k_start;
    offset = seqlen_k - seqlen_q;
    row_lo = m_block * block_m;
    const int row_hi = min(seqlen_q, row_lo + block_m) - 1;
    int n_end = seqlen_k;
    if (p.window_right >= 0) n_end = min(n_end, row_hi + offset + p.window_right + 1);
    const int n_begin = p.window_left >= 0 ? max(0, row_lo + offset - p.window_left) : 0;
    nb_begin = n_begin / block_n;
    nb_end = n_end > n_begin ? (n_end + block_n - 1) / block_n : nb_begin;
    slope_log2 =
        p.alibi_slopes ? p.alibi_slopes[batch * p.alibi_batch_stride + head] * kLog2e : 0.f;
  }

  // First element of this sequence's rows of one head in q / k / v (the head dim is contiguous).
  template <typename Element>
  __device__ const Element* q_ptr(const FmhaDeviceParams& p, int head) const {
    return static_cast<const Element*>(p.q) + static_cast<int64_t>(q_start) * p.q_row_stride +
           head * p.q_head_stride;
  }
  template <typename Element>
  __device__ const Element* k_ptr(const FmhaDeviceParams& p, int kv_head) const {
    return static_cast<const Element*>(p.k) + static_cast<int64_t>(k_start) * p.k_row_stride +
           kv_head * p.k_head_stride;
  }
  template <typename Element>
  __device__ const Element* v_ptr(const FmhaDeviceParams& p, int kv_head) const {
    return static_cast<const Element*>(p.v) + static_cast<int64_t>(k_start) * p.v_row_stride +
           kv_head * p.v_head_stride;
  }

  // Whether K/V block nb may hold a masked element for some row of this query block (the
  // sequence end, or a causal / window edge crossing it); other blocks skip the element mask.
  __device__ bool block_needs_mask(const FmhaDeviceParams& p, int nb, int block_m,
                                   int block_n) const {
    const int col0 = nb * block_n;
    return col0 + block_n > seqlen_k ||
           (p.window_right >= 0 && col0 + block_n - 1 > row_lo + offset + p.window_right) ||
           (p.window_left >= 0 && col0 < row_lo + block_m - 1 + offset - p.window_left);
  }

  // A scaled score (log2 domain) with the mask and ALiBi of element (q_row, k_col) applied.
  __device__ float masked(const FmhaDeviceParams& p, float x, int q_row, int k_col) const {
    const int diag = q_row + offset;
    const bool visible = k_col < seqlen_k &&
                         (p.window_right < 0 || k_col <= diag + p.window_right) &&
                         (p.window_left < 0 || k_col >= diag - p.window_left);
    return visible ? x - slope_log2 * fabsf(static_cast<float>(diag - k_col)) : -INFINITY;
  }
};

// 2^x with the special-function unit (ex2.approx.ftz: ~2 ulp, 2^-inf = +0).
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// Online-softmax step for one row: folds a new tile maximum into the running max and returns
// the exp2 base to subtract and the factor that rescales the old accumulator and sum.
// A row that has seen no visible key keeps max = -inf and uses base 0, so exp2 gives 0, not NaN.
struct OnlineSoftmaxStep {
  float base;
  float alpha;
};

__device__ __forceinline__ OnlineSoftmaxStep online_softmax_step(float& row_max, float tile_max) {
  const float mx = fmaxf(row_max, tile_max);
  const float base = mx == -INFINITY ? 0.f : mx;
  const float alpha = fast_exp2(row_max - base);
  row_max = mx;
  return {base, alpha};
}

// Natural-log LSE of a finished row from its log2-domain max and its sum.
__device__ __forceinline__ float row_lse(float row_max, float sum) {
  return sum != 0.f ? (row_max + log2f(sum)) * kLn2 : -INFINITY;
}

}  // namespace fastattn::kernels::cuda
