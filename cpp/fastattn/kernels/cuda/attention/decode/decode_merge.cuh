// The merge kernel of split launches too large for the split kernel's own last-CTA merge
// (decode_cuda.cc): combines each row's per-split partial outputs by their log-sum-exp
// (out = sum_s exp2(lse_s - M) O_s / sum_s exp2(lse_s - M), M = max_s lse_s) and writes out (and
// the natural-log lse). One CTA of 8 warps per (token, head) row: the warps take every 8th split
// (so a row's partial loads are in flight together, not one split after another), then sum their
// results through shared memory. Splits with no visible key carry lse = -inf and weigh 0; a row
// with no visible key at all gets a zero output and lse = -inf.
#pragma once

#include "fastattn/kernels/cuda/attention/decode/decode_common.cuh"
#include "fastattn/kernels/cuda/attention/decode/decode_params.h"
#include "fastattn/kernels/cuda/attention/fmha_common.cuh"

namespace fastattn::kernels::cuda::decode {

constexpr int kMergeWarps = 8;
constexpr int kMergeMaxHeadDim = 256;

template <typename Element>
__global__ void __launch_bounds__(kMergeWarps * 32)
    decode_merge_kernel(const DecodeDeviceParams p) {
  __shared__ __align__(16) float s_acc[kMergeWarps][kMergeMaxHeadDim];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t rows = p.total_q * p.num_heads_q;
  const int64_t row = blockIdx.x;
  const float* lse_row = p.part_lse + row;               // split s at lse_row[s * rows]
  const float* out_row = p.part_out + row * p.head_dim;  // split s at out_row[s * rows * D]

  // Max and sum over the splits (every warp, lanes striding over the splits: no barrier).
  float mx = -INFINITY;
  for (int s = lane; s < p.num_splits; s += 32) mx = fmaxf(mx, __ldg(lse_row + s * rows));
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
  const float base = mx == -INFINITY ? 0.f : mx;
  float sum = 0.f;
  for (int s = lane; s < p.num_splits; s += 32) sum += fast_exp2(__ldg(lse_row + s * rows) - base);
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);

  // Warp w sums splits w, w + 8, ...; lanes own 4-column pieces lane and lane + 32. No branch on
  // the weight, so the loads of several splits are in flight together (an empty split's
  // partial is 0 and its weight 0).
  const int pieces = p.head_dim / 4;
  float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
#pragma unroll 4
  for (int s = warp; s < p.num_splits; s += kMergeWarps) {
    const float w = fast_exp2(__ldg(lse_row + s * rows) - base);
    const float4* src = reinterpret_cast<const float4*>(out_row + s * rows * p.head_dim);
#pragma unroll
    for (int c = 0; c < 2; ++c) {
      if (c * 32 + lane < pieces) {
        const float4 o = __ldg(src + c * 32 + lane);
        acc[4 * c] = fmaf(w, o.x, acc[4 * c]);
        acc[4 * c + 1] = fmaf(w, o.y, acc[4 * c + 1]);
        acc[4 * c + 2] = fmaf(w, o.z, acc[4 * c + 2]);
        acc[4 * c + 3] = fmaf(w, o.w, acc[4 * c + 3]);
      }
    }
  }
#pragma unroll
  for (int c = 0; c < 2; ++c) {
    if (c * 32 + lane < pieces) {
      *reinterpret_cast<float4*>(&s_acc[warp][(c * 32 + lane) * 4]) =
          make_float4(acc[4 * c], acc[4 * c + 1], acc[4 * c + 2], acc[4 * c + 3]);
    }
  }
  __syncthreads();

  const int piece = threadIdx.x;
  if (piece < pieces) {
    const float inv = sum != 0.f ? 1.f / sum : 0.f;
    float o[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
    for (int w = 0; w < kMergeWarps; ++w) {
      const float4 a = *reinterpret_cast<const float4*>(&s_acc[w][piece * 4]);
      o[0] += a.x;
      o[1] += a.y;
      o[2] += a.z;
      o[3] += a.w;
    }
#pragma unroll
    for (int e = 0; e < 4; ++e) o[e] *= inv;
    const int64_t token = row / p.num_heads_q;
    const int head = static_cast<int>(row - token * p.num_heads_q);
    Element* out = static_cast<Element*>(p.out) + token * p.o_row_stride + head * p.o_head_stride;
    store_from_float<Element, 4>(out + piece * 4, o);
    if (piece == 0 && p.lse != nullptr) {
      p.lse[head * p.lse_head_stride + token] = sum != 0.f ? (mx + log2f(sum)) * kLn2 : -INFINITY;
    }
  }
}

}  // namespace fastattn::kernels::cuda::decode
