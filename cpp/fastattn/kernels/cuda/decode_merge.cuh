// The second kernel of a split launch: combines each row's per-split partial outputs by their
// log-sum-exp (out = sum_s exp2(lse_s - M) O_s / sum_s exp2(lse_s - M), M = max_s lse_s) and
// writes out (and the natural-log lse). One warp per (token, head) row; lanes own 4-column
// pieces of the head dim (pieces lane and lane + 32). Splits with no visible key carry lse = -inf and weigh 0; a row with
// no visible key at all gets a zero output and lse = -inf.
#pragma once

#include "fastattn/kernels/cuda/decode_common.cuh"
#include "fastattn/kernels/cuda/decode_params.h"
#include "fastattn/kernels/cuda/fmha_common.cuh"

namespace fastattn::kernels::cuda::decode {

constexpr int kMergeWarps = 4;
constexpr int kMergeColsPerLane = 8;  // head dims up to 32 lanes x 8 = 256

template <typename Element>
__global__ void __launch_bounds__(kMergeWarps * 32) decode_merge_kernel(const DecodeDeviceParams p) {
  const int lane = threadIdx.x % 32;
  const int64_t rows = p.total_q * p.num_heads_q;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kMergeWarps + threadIdx.x / 32;
  if (row >= rows) return;
  const float* lse_row = p.part_lse + row;  // split s at lse_row[s * rows]
  const float* out_row = p.part_out + row * p.head_dim;  // split s at out_row[s * rows * D]

  // Max and sum over the splits, lanes striding over them.
  float mx = -INFINITY;
  for (int s = lane; s < p.num_splits; s += 32) mx = fmaxf(mx, __ldg(lse_row + s * rows));
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
  const float base = mx == -INFINITY ? 0.f : mx;
  float sum = 0.f;
  for (int s = lane; s < p.num_splits; s += 32) sum += fast_exp2(__ldg(lse_row + s * rows) - base);
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
  const float inv = sum > 0.f ? 1.f / sum : 0.f;

  // out = sum_s w_s O_s, 32 splits at a time: lane i holds the weight of split s0 + i (shuffled
  // to all lanes); no branches in the loop, so the partial-row loads of 8 splits are in flight
  // together (an empty split's partial is 0 with weight 0).
  float acc[kMergeColsPerLane];
#pragma unroll
  for (int i = 0; i < kMergeColsPerLane; ++i) acc[i] = 0.f;
  const int pieces = p.head_dim / 4;  // 4-column pieces; lane owns pieces lane, lane + 32
  for (int s0 = 0; s0 < p.num_splits; s0 += 32) {
    const int n = min(32, p.num_splits - s0);
    const float w_lane = lane < n ? fast_exp2(__ldg(lse_row + (s0 + lane) * rows) - base) * inv : 0.f;
#pragma unroll 8
    for (int i = 0; i < n; ++i) {
      const float w = __shfl_sync(0xffffffffu, w_lane, i);
      const float* src = out_row + (s0 + i) * rows * p.head_dim;
#pragma unroll
      for (int c = 0; c < kMergeColsPerLane / 4; ++c) {
        const int piece = c * 32 + lane;
        if (piece < pieces) {
          const float4 o = __ldg(reinterpret_cast<const float4*>(src) + piece);
          acc[c * 4] = fmaf(w, o.x, acc[c * 4]);
          acc[c * 4 + 1] = fmaf(w, o.y, acc[c * 4 + 1]);
          acc[c * 4 + 2] = fmaf(w, o.z, acc[c * 4 + 2]);
          acc[c * 4 + 3] = fmaf(w, o.w, acc[c * 4 + 3]);
        }
      }
    }
  }
  const int64_t token = row / p.num_heads_q;
  const int head = static_cast<int>(row - token * p.num_heads_q);
  Element* out = static_cast<Element*>(p.out) + token * p.o_row_stride + head * p.o_head_stride;
#pragma unroll
  for (int c = 0; c < kMergeColsPerLane / 4; ++c) {
    const int piece = c * 32 + lane;
    if (piece < pieces) {
      const float o[4] = {acc[c * 4], acc[c * 4 + 1], acc[c * 4 + 2], acc[c * 4 + 3]};
      store_from_float<Element, 4>(out + piece * 4, o);
    }
  }
  if (lane == 0 && p.lse != nullptr) {
    p.lse[head * p.lse_head_stride + token] = sum > 0.f ? (mx + log2f(sum)) * kLn2 : -INFINITY;
  }
}

}  // namespace fastattn::kernels::cuda::decode
