// The split-KV ("flash-decoding") attention kernel: few query rows per sequence against a long,
// paged or contiguous KV cache. Geometry and thread roles: DecodeTraits (decode_common.cuh).
//
// Grid: x = query tile x KV head (the KV head varies fastest, so the CTAs of one split of one
// sequence run together and read the same DRAM pages: a key's K row holds all KV heads, each
// CTA reads one head's slice), y = split of the key range, z = sequence. A split walks its keys
// in tiles of kBlockN:
//   cp.async (sm_80 .. sm_89 by default): copies into kDecodeAsyncStages shared-memory stages
//            (tiles t + 1 and t + 2 in flight while tile t is computed); 16-byte chunks, .cg.
//   register-staged (sm_70 / sm_75, and sm_90 by default, where it measured faster): 16-byte
//            loads into registers for tile t + 1 issued before tile t is computed, stored to the
//            other of two shared stages after it.
// Math is SIMT fp32 on every arch (the kernel is memory bound at decode's few rows per K/V byte).
// The output of a split is written once: the final out / lse when the launch has one split,
// else an fp32 partial and its log2-domain LSE, merged by the tile's last split CTA to finish
// (merge_if_last) or, for launches with very many tiles, by the merge kernel (decode_merge.cuh).
#pragma once

#include "fastattn/kernels/cuda/attention/decode/decode_common.cuh"
#include "fastattn/kernels/cuda/attention/decode/decode_params.h"
#include "fastattn/kernels/cuda/attention/decode/decode_tile.cuh"
#include "fastattn/kernels/cuda/attention/fmha_common.cuh"

namespace fastattn::kernels::cuda::decode {

// One warp's online-softmax state: running max (log2 domain) and sum per row, O columns.
template <class T>
struct WarpState {
  float row_max[T::kRows];
  float row_sum[T::kRows];  // this lane's share (its key); summed over the warp at the end
  float acc[T::kRows][T::kPiece];
};

// Q K^T, mask, online softmax and P V of one tile for this warp's keys.
template <class T>
__device__ __forceinline__ void compute_tile(const DecodeDeviceParams& p, const DecodeTileInfo& t,
                                             const DecodeSmem<T>& sm, int stage, int n0,
                                             WarpState<T>& st) {
  using Element = typename T::Element;
  constexpr int kRows = T::kRows, kKw = T::kKeysPerWarp, kCe = T::kChunkElems;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int j = lane % kKw, part = lane / kKw;
  const int kt = warp * kKw + j;  // key within the tile
  const int key = n0 + kt;

  // S = Q K^T (log2 domain: q is pre-scaled by softmax_scale * log2(e)).
  float s[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r) s[r] = 0.f;
  const Element* krow = sm.k(stage) + kt * T::kRowElems;
  const float* sq = sm.q();
#pragma unroll
  for (int i = 0; i < T::kChunksPerLane; ++i) {
    const int c = i * T::kLanesPerKey + part;
    float kf[kCe];
    load_as_float<Element, kCe>(krow + c * kCe, kf);
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      float qf[kCe];
      load_floats<kCe>(sq + r * T::kQStride + c * kCe, qf);
#pragma unroll
      for (int e = 0; e < kCe; ++e) s[r] = fmaf(qf[e], kf[e], s[r]);
    }
  }
#pragma unroll
  for (int off = kKw; off < 32; off <<= 1) {
#pragma unroll
    for (int r = 0; r < kRows; ++r) s[r] += __shfl_xor_sync(0xffffffffu, s[r], off);
  }

  // Mask (only tiles that cross the split end or a causal / window edge) and ALiBi.
  const bool need_mask =
      n0 + T::kBlockN > t.split_hi ||
      (p.window_right >= 0 && n0 + T::kBlockN - 1 > t.diag_lo + p.window_right) ||
      (p.window_left >= 0 && n0 < t.diag_hi - p.window_left);
  if (need_mask || p.alibi_slopes != nullptr) {
    const int* diag = sm.row_diag();
    const float* slope = sm.row_slope();
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const int d = diag[r];
      const bool visible = key < t.split_hi && (p.window_right < 0 || key <= d + p.window_right) &&
                           (p.window_left < 0 || key >= d - p.window_left);
      s[r] = visible ? s[r] - slope[r] * fabsf(static_cast<float>(d - key)) : -INFINITY;
    }
  }

  // Online softmax over this warp's keys (lanes of one part hold all of them).
  float alpha[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    float mx = s[r];
#pragma unroll
    for (int off = 1; off < kKw; off <<= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
    const OnlineSoftmaxStep step = online_softmax_step(st.row_max[r], mx);
    alpha[r] = step.alpha;
    s[r] = fast_exp2(s[r] - step.base);
    st.row_sum[r] = st.row_sum[r] * step.alpha + s[r];
  }
  float* sp = sm.p(warp);
  if (part == 0) store_floats<kRows>(sp + j * kRows, s);
  __syncwarp();

  // O = O * alpha + P V over this warp's keys.
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
#pragma unroll
    for (int e = 0; e < T::kPiece; ++e) st.acc[r][e] *= alpha[r];
  }
  if (T::kPvLanes == 32 || lane < T::kPvLanes) {
    const Element* vtile = sm.v(stage) + warp * kKw * T::kRowElems + lane * T::kPiece;
#pragma unroll
    for (int jj = 0; jj < kKw; ++jj) {
      float vf[T::kPiece];
      load_as_float<Element, T::kPiece>(vtile + jj * T::kRowElems, vf);
      float pr[kRows];
      load_floats<kRows>(sp + jj * kRows, pr);
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
#pragma unroll
        for (int e = 0; e < T::kPiece; ++e) st.acc[r][e] = fmaf(pr[r], vf[e], st.acc[r][e]);
      }
    }
  }
  __syncwarp();  // P is rewritten by the next tile
}

// Query rows of the tile (scaled, fp32) and their mask info into shared memory.
template <class T>
__device__ __forceinline__ void load_query_rows(const DecodeDeviceParams& p,
                                                const DecodeTileInfo& t, const DecodeSmem<T>& sm) {
  using Element = typename T::Element;
  constexpr int kCe = T::kChunkElems;
  const Element* q = static_cast<const Element*>(p.q);
  for (int idx = threadIdx.x; idx < T::kRows * T::kChunks; idx += T::kThreads) {
    const int r = idx / T::kChunks;
    const int c = idx - r * T::kChunks;
    float f[kCe];
    if (r < t.rows) {
      const int row = t.row0 + r;
      const int token = t.q_start + row / p.group;
      const int head = t.kv_head * p.group + row % p.group;
      load_as_float<Element, kCe>(q + token * p.q_row_stride + head * p.q_head_stride + c * kCe, f);
#pragma unroll
      for (int e = 0; e < kCe; ++e) f[e] *= p.scale_log2;
    } else {
#pragma unroll
      for (int e = 0; e < kCe; ++e) f[e] = 0.f;
    }
    store_floats<kCe>(sm.q() + r * T::kQStride + c * kCe, f);
  }
  if (threadIdx.x < T::kRows) {
    const int r = threadIdx.x;
    const int row = t.row0 + min(r, t.rows - 1);
    sm.row_diag()[r] = t.diag_lo - t.row0 / p.group + row / p.group;
    const int head = t.kv_head * p.group + row % p.group;
    sm.row_slope()[r] = p.alibi_slopes != nullptr
                            ? p.alibi_slopes[t.batch * p.alibi_batch_stride + head] * kLog2e
                            : 0.f;
  }
}

// Split launches without a merge kernel: the last CTA of a (sequence, KV head, query tile) to
// finish merges the tile's rows from all splits' partials (by LSE, in split order) and writes
// out / lse. The arrival counter wraps to 0 on the last arrival (atomicInc), so the counters are
// zero again for the next launch on the stream (decode_cuda.cc keeps one buffer per stream).
template <class T>
__device__ __forceinline__ void merge_if_last(const DecodeDeviceParams& p, const DecodeTileInfo& t,
                                              const DecodeSmem<T>& sm) {
  using Element = typename T::Element;
  __shared__ int is_last;
  __threadfence();  // this CTA's partials are visible device-wide before it is counted
  __syncthreads();
  if (threadIdx.x == 0) {
    unsigned* counter = p.split_counters + blockIdx.z * gridDim.x + blockIdx.x;
    is_last = atomicInc(counter, static_cast<unsigned>(p.num_splits - 1)) ==
              static_cast<unsigned>(p.num_splits - 1);
  }
  __syncthreads();
  if (!is_last) return;
  __threadfence();

  // Per row: max and 1 / sum of the splits' weights (one warp per row), then the columns.
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t split_stride = p.total_q * p.num_heads_q;
  float* row_max = sm.warp_max();  // [kRows] here
  float* row_inv = sm.warp_sum();
  for (int r = warp; r < t.rows; r += T::kWarps) {
    const int row = t.row0 + r;
    const int64_t prow = (t.q_start + row / p.group) * static_cast<int64_t>(p.num_heads_q) +
                         t.kv_head * p.group + row % p.group;
    float mx = -INFINITY;
    for (int s = lane; s < p.num_splits; s += 32)
      mx = fmaxf(mx, __ldcg(p.part_lse + s * split_stride + prow));
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
    const float base = mx == -INFINITY ? 0.f : mx;
    float sum = 0.f;
    for (int s = lane; s < p.num_splits; s += 32)
      sum += fast_exp2(__ldcg(p.part_lse + s * split_stride + prow) - base);
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
    if (lane == 0) {
      row_max[r] = base;
      row_inv[r] = sum != 0.f ? 1.f / sum : 0.f;
      if (p.lse != nullptr) {
        const int64_t token = t.q_start + row / p.group;
        p.lse[(t.kv_head * p.group + row % p.group) * p.lse_head_stride + token] =
            sum != 0.f ? (mx + log2f(sum)) * kLn2 : -INFINITY;
      }
    }
  }
  __syncthreads();
  constexpr int kPieces = T::kHeadDim / 4;
  for (int idx = threadIdx.x; idx < t.rows * kPieces; idx += T::kThreads) {
    const int r = idx / kPieces;
    const int piece = idx - r * kPieces;
    const int row = t.row0 + r;
    const int64_t token = t.q_start + row / p.group;
    const int head = t.kv_head * p.group + row % p.group;
    const int64_t prow = token * p.num_heads_q + head;
    const float base = row_max[r], inv = row_inv[r];
    float o[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll 8
    for (int s = 0; s < p.num_splits; ++s) {  // independent loads: 8 splits in flight
      const float w = fast_exp2(__ldcg(p.part_lse + s * split_stride + prow) - base);
      const float* part = p.part_out + (s * split_stride + prow) * T::kHeadDim;
      const float4 v = __ldcg(reinterpret_cast<const float4*>(part) + piece);
      o[0] = fmaf(w, v.x, o[0]);
      o[1] = fmaf(w, v.y, o[1]);
      o[2] = fmaf(w, v.z, o[2]);
      o[3] = fmaf(w, v.w, o[3]);
    }
#pragma unroll
    for (int e = 0; e < 4; ++e) o[e] *= inv;
    Element* out = static_cast<Element*>(p.out) + token * p.o_row_stride + head * p.o_head_stride;
    store_from_float<Element, 4>(out + piece * 4, o);
  }
}

// Merges the four warps' states and writes this split's rows: the final out / lse (one split)
// or the fp32 partial and its log2-domain LSE.
template <class T>
__device__ __forceinline__ void write_split(const DecodeDeviceParams& p, const DecodeTileInfo& t,
                                            const DecodeSmem<T>& sm, WarpState<T>& st) {
  using Element = typename T::Element;
  constexpr int kRows = T::kRows, kCe = T::kChunkElems;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
#pragma unroll
    for (int off = 1; off < T::kKeysPerWarp; off <<= 1) {
      st.row_sum[r] += __shfl_xor_sync(0xffffffffu, st.row_sum[r], off);
    }
  }
  if (lane == 0) {
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      sm.warp_max()[warp * kRows + r] = st.row_max[r];
      sm.warp_sum()[warp * kRows + r] = st.row_sum[r];
    }
  }
  cp_async_wait<0>();
  __syncthreads();  // every warp is done with the K / V tiles; the warp states are visible

  // Each warp's O scaled to the common row max, summed in warp order (deterministic).
  float* so = sm.merge();
  float scale[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    float mx = -INFINITY;
#pragma unroll
    for (int w = 0; w < T::kWarps; ++w) mx = fmaxf(mx, sm.warp_max()[w * kRows + r]);
    scale[r] = fast_exp2(st.row_max[r] - (mx == -INFINITY ? 0.f : mx));
  }
  for (int w = 0; w < T::kWarps; ++w) {
    if (warp == w && (T::kPvLanes == 32 || lane < T::kPvLanes)) {
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        float* dst = so + r * T::kHeadDim + lane * T::kPiece;
#pragma unroll
        for (int e = 0; e < T::kPiece; ++e) {
          dst[e] = (w == 0 ? 0.f : dst[e]) + st.acc[r][e] * scale[r];
        }
      }
    }
    __syncthreads();
  }

  const bool final_out = p.num_splits == 1;
  for (int idx = threadIdx.x; idx < t.rows * T::kChunks; idx += T::kThreads) {
    const int r = idx / T::kChunks;
    const int c = idx - r * T::kChunks;
    float mx = -INFINITY;
#pragma unroll
    for (int w = 0; w < T::kWarps; ++w) mx = fmaxf(mx, sm.warp_max()[w * kRows + r]);
    const float base = mx == -INFINITY ? 0.f : mx;
    float sum = 0.f;
#pragma unroll
    for (int w = 0; w < T::kWarps; ++w) {
      sum += sm.warp_sum()[w * kRows + r] * fast_exp2(sm.warp_max()[w * kRows + r] - base);
    }
    const float inv = sum != 0.f ? 1.f / sum : 0.f;
    float o[kCe];
#pragma unroll
    for (int e = 0; e < kCe; ++e) o[e] = so[r * T::kHeadDim + c * kCe + e] * inv;
    const int row = t.row0 + r;
    const int64_t token = t.q_start + row / p.group;
    const int head = t.kv_head * p.group + row % p.group;
    const float lse2 = sum != 0.f ? mx + log2f(sum) : -INFINITY;
    if (final_out) {
      Element* out = static_cast<Element*>(p.out) + token * p.o_row_stride + head * p.o_head_stride;
      store_from_float<Element, kCe>(out + c * kCe, o);
      if (c == 0 && p.lse != nullptr) p.lse[head * p.lse_head_stride + token] = lse2 * kLn2;
    } else {
      const int64_t prow =
          (static_cast<int64_t>(blockIdx.y) * p.total_q + token) * p.num_heads_q + head;
      store_floats<kCe>(p.part_out + prow * T::kHeadDim + c * kCe, o);
      if (c == 0) p.part_lse[prow] = lse2;
    }
  }
  if (!final_out && p.split_counters != nullptr) merge_if_last<T>(p, t, sm);
}

// Shared-memory K / V stages of the two copy paths.
constexpr int kDecodeAsyncStages = 3;
constexpr int kDecodeRegStages = 2;

// kRegStaging selects the register-staged copies on sm_80+ too (the host's choice there, see
// decode_cuda.cc); below sm_80 they are the only path, and the kRegStaging instance is never
// launched there.
template <typename Element, int kHeadDim, int kRows, bool kRegStaging>
__global__ void __launch_bounds__(128) decode_split_kernel(const DecodeDeviceParams p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  constexpr bool kAsync = !kRegStaging;
#else
  constexpr bool kAsync = false;
  if constexpr (kRegStaging) {
    __trap();  // launched on sm_80+ only (the host checks)
  } else
#endif
  {
    using T =
        DecodeTraits<Element, kHeadDim, kRows, kAsync ? kDecodeAsyncStages : kDecodeRegStages>;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    const DecodeSmem<T> sm{smem_raw};
    DecodeTileInfo t;
    if (!tile_info(p, T::kBlockN, kRows, t)) return;

    WarpState<T> st;
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      st.row_max[r] = -INFINITY;
      st.row_sum[r] = 0.f;
#pragma unroll
      for (int e = 0; e < T::kPiece; ++e) st.acc[r][e] = 0.f;
    }
    load_query_rows<T>(p, t, sm);  // visible after the first barrier of the loop

    const int num_tiles =
        t.split_hi > t.split_lo ? (t.split_hi - t.split_lo + T::kBlockN - 1) / T::kBlockN : 0;
    BlockIds<T> ids;  // of the next tile to copy
    if (num_tiles > 0) ids.load(p, t, t.split_lo);
    if constexpr (kAsync) {
#pragma unroll
      for (int s = 0; s < T::kStages - 1; ++s) {
        if (s < num_tiles) {
          issue_tile_async<T>(p, t, sm, s, t.split_lo + s * T::kBlockN, ids);
          ids.load(p, t, t.split_lo + (s + 1) * T::kBlockN);
        }
        cp_async_commit();
      }
      for (int i = 0; i < num_tiles; ++i) {
        cp_async_wait<T::kStages - 2>();
        __syncthreads();  // tile i landed for every thread; every warp is done with tile i - 1
        const int next = i + T::kStages - 1;
        if (next < num_tiles) {
          issue_tile_async<T>(p, t, sm, next % T::kStages, t.split_lo + next * T::kBlockN, ids);
          ids.load(p, t, t.split_lo + (next + 1) * T::kBlockN);
        }
        cp_async_commit();
        compute_tile<T>(p, t, sm, i % T::kStages, t.split_lo + i * T::kBlockN, st);
      }
    } else {
      // Two shared stages: tile i goes to stage i % 2, last read by tile i - 2, which every warp
      // finished before the previous iteration's barrier; so one barrier per tile.
      StagedTile<T> staged;
      if (num_tiles > 0) {
        staged.fetch(p, t, t.split_lo, ids);
        ids.load(p, t, t.split_lo + T::kBlockN);
      }
      for (int i = 0; i < num_tiles; ++i) {
        staged.store(sm, i % 2);
        __syncthreads();  // tile i visible to every warp
        if (i + 1 < num_tiles) {
          staged.fetch(p, t, t.split_lo + (i + 1) * T::kBlockN, ids);
          ids.load(p, t, t.split_lo + (i + 2) * T::kBlockN);
        }
        compute_tile<T>(p, t, sm, i % 2, t.split_lo + i * T::kBlockN, st);
      }
    }
    write_split<T>(p, t, sm, st);
  }
}

}  // namespace fastattn::kernels::cuda::decode
