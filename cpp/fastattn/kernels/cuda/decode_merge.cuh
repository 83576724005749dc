// The second kernel of a split launch: combines each row's per-split partial outputs by their
// log-sum-exp (out = sum_s exp2(lse_s - M) O_s / sum_s exp2(lse_s - M), M = max_s lse_s) and
// writes out (and the natural-log lse). One warp per (token, head) row; lanes own 4-column
// pieces of the head dim. Splits with no visible key carry lse = -inf and weigh 0; a row with
// no visible key at all gets a zero output and lse = -inf.
#pragma once

#include "fastattn/kernels/cuda/decode_common.cuh"
#include "fastattn/kernels/cuda/decode_params.h"
#include "fastattn/kernels/cuda/fmha_common.cuh"

namespace fastattn::kernels::cuda::decode {

constexpr int kMergeWarps = 4;

template <typename Element>
__global__ void __launch_bounds__(kMergeWarps * 32) decode_merge_kernel(const DecodeDeviceParams p) {
  const int lane = threadIdx.x % 32;
  const int64_t rows = p.total_q * p.num_heads_q;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kMergeWarps + threadIdx.x / 32;
  if (row >= rows) return;
  const int64_t split_stride = rows;  // partial rows are [split][token][head]

  float mx = -INFINITY;
  for (int s = lane; s < p.num_splits; s += 32) mx = fmaxf(mx, p.part_lse[s * split_stride + row]);
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
  const float base = mx == -INFINITY ? 0.f : mx;
  float sum = 0.f;
  for (int s = lane; s < p.num_splits; s += 32) sum += fast_exp2(p.part_lse[s * split_stride + row] - base);
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
  const float inv = sum > 0.f ? 1.f / sum : 0.f;

  const int64_t token = row / p.num_heads_q;
  const int head = static_cast<int>(row - token * p.num_heads_q);
  Element* out = static_cast<Element*>(p.out) + token * p.o_row_stride + head * p.o_head_stride;
  for (int c = lane * 4; c < p.head_dim; c += 32 * 4) {
    float acc[4] = {0.f, 0.f, 0.f, 0.f};
    for (int s = 0; s < p.num_splits; ++s) {
      const float w = fast_exp2(p.part_lse[s * split_stride + row] - base);
      if (w > 0.f) {
        float o[4];
        load_floats<4>(p.part_out + (s * split_stride + row) * p.head_dim + c, o);
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[e] = fmaf(w, o[e], acc[e]);
      }
    }
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[e] *= inv;
    store_from_float<Element, 4>(out + c, acc);
  }
  if (lane == 0 && p.lse != nullptr) {
    p.lse[head * p.lse_head_stride + token] = sum > 0.f ? (mx + log2f(sum)) * kLn2 : -INFINITY;
  }
}

}  // namespace fastattn::kernels::cuda::decode
