// The FlashAttention-2 forward mainloop for Volta's mma.sync.m8n8k4 (the "884" path).
//
// m8n8k4 is four independent 8x8x4 products per warp, one per quad-pair (QP q = lanes 4q..4q+3
// and 4q+16..4q+19). Inside a QP, thread i = (lane & 3) + 4 * (lane >> 4) holds (PTX ISA):
//   A (8x4, .row):   A[i][0..3]                 -- one row, 4 consecutive k (8 bytes)
//   B (4x8, .col):   B[0..3][i]                 -- for S = Q K^T: row i of K, 4 consecutive k
//   B (4x8, .row):   B[lane & 3][4 * (lane >> 4) .. +3]  -- for O = P V: one key row of V,
//                                                  4 consecutive head-dim columns
//   C (8x8, f32):    C[m][n] for m = i0 + 2 v1 + 4 i2, n = v0 + 2 i1 + 4 v2 (v = 0..7),
//                    with i = i0 + 2 i1 + 4 i2 and v = v0 + 2 v1 + 4 v2
// Warp tiling: the four QPs take four different 8-row slices (a warp owns 32 query rows), so
// every QP multiplies by the same K / V fragment: those loads are broadcasts, and the softmax
// row reductions stay inside a QP (a row lives in 2 threads: lanes l and l ^ 2).
//
// Shared-memory layout (the point of this path; drawn for one 128-byte group of 8 chunks of
// 16 bytes = 8 halves). Row r keeps its chunk c at physical chunk  c ^ swz(r),
//   swz(r) = (r & 3) | (r & 8) >> 1        rows 0-3 -> 0..3, rows 8-11 -> 4..7, 16-19 -> 0..3, ...
// A 16-byte load is served 8 lanes at a time. The A-fragment loads (LDS.128, 8 k at once) of
// lanes 0-7 read rows {0,1,2,3} (QP0) and {8,9,10,11} (QP1) of one column chunk: in a plain
// row-major tile with 256-byte rows these all sit in the same 16-byte bank slot (an 8-way
// conflict); with the swizzle they land on slots 0..7 (conflict-free). The same holds for lanes
// 8-15 (rows 16-19, 24-27), 16-23 (rows 4-7, 12-15) and 24-31 (rows 20-23, 28-31), for the
// K-row B loads (rows 0-7 of a K block, 4 distinct addresses per phase), for the V-row B loads
// (LDS.64: keys 0-3 of a k4 step) and for the P tile that goes through shared memory:
//
//            chunk: 0   1   2   3   4   5   6   7
//   row 0          c0  c1  c2  c3  c4  c5  c6  c7
//   row 1          c1  c0  c3  c2  c5  c4  c7  c6
//   row 2          c2  c3  c0  c1  c6  c7  c4  c5
//   row 3          c3  c2  c1  c0  c7  c6  c5  c4
//   rows 4-7       as rows 0-3
//   row 8          c4  c5  c6  c7  c0  c1  c2  c3
//   ...            (rows 8-15 swap the two 64-byte halves, then as rows 0-7)
// Rows are padded to a whole number of 128-byte groups, so every row starts on bank 0.
//
// The S accumulator's layout is not the A-operand layout, so P is written (fp16) to a per-warp
// shared tile with the same swizzle and read back as A fragments. Global -> shared copies are
// staged through registers (no cp.async on Volta).
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "fastattn/kernels/cuda/attention/fmha_common.cuh"
#include "fastattn/kernels/cuda/attention/fmha_device_params.h"
#include "fastattn/kernels/cuda/mma_m16n8.cuh"

namespace fastattn::kernels::cuda {

struct Mma884 {};

// D (8x8 f32) += A (8x4 f16, row) * B (4x8 f16, col or row), per quad-pair.
template <bool kBRowMajor>
__device__ __forceinline__ void mma884(float (&c)[8], uint32_t a0, uint32_t a1, uint32_t b0,
                                       uint32_t b1) {
  if constexpr (kBRowMajor) {
    asm volatile(
        "mma.sync.aligned.m8n8k4.row.row.f32.f16.f16.f32 {%0,%1,%2,%3,%4,%5,%6,%7}, {%8,%9}, "
        "{%10,%11}, {%0,%1,%2,%3,%4,%5,%6,%7};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3]), "+f"(c[4]), "+f"(c[5]), "+f"(c[6]),
          "+f"(c[7])
        : "r"(a0), "r"(a1), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m8n8k4.row.col.f32.f16.f16.f32 {%0,%1,%2,%3,%4,%5,%6,%7}, {%8,%9}, "
        "{%10,%11}, {%0,%1,%2,%3,%4,%5,%6,%7};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3]), "+f"(c[4]), "+f"(c[5]), "+f"(c[6]),
          "+f"(c[7])
        : "r"(a0), "r"(a1), "r"(b0), "r"(b1));
  }
}

// Swizzled (or, for the comparison build, plain) element offset of (row, col) in a tile whose
// rows are kRowChunks 16-byte chunks long.
template <int kRowChunks, bool kSwizzle>
__device__ __forceinline__ int sm70_offset(int row, int col) {
  const int chunk = col >> 3;
  const int phys = kSwizzle ? chunk ^ ((row & 3) | ((row & 8) >> 1)) : chunk;
  return row * kRowChunks * 8 + phys * 8 + (col & 7);
}

// kDSplit > 1 computes O in kDSplit column slices, one pass over K / V each (QK^T and the softmax
// are recomputed per pass): O for 32 rows x D in registers must fit, and D = 256 does not in one.
template <typename Element_, int kHeadDim_, int kBlockN_, int kNumWarps_, bool kSwizzle_,
          int kDSplit_ = 1>
struct FmhaTraitsSm70 {
  using Element = Element_;
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kNumWarps = kNumWarps_;
  static constexpr int kThreads = kNumWarps * 32;
  static constexpr int kBlockM = kNumWarps * 32;  // 4 quad-pairs x 8 rows per warp
  static constexpr int kBlockN = kBlockN_;
  static constexpr bool kSwizzle = kSwizzle_;
  static constexpr int kChunks = kHeadDim / 8;              // 16-byte chunks of data per row
  static constexpr int kRowChunks = (kChunks + 7) / 8 * 8;  // padded to 128-byte groups
  static constexpr int kPRowChunks = (kBlockN / 8 + 7) / 8 * 8;
  static constexpr int kDSplit = kDSplit_;
  static constexpr int kDTiles = kHeadDim / 8 / kDSplit;  // O n8 tiles per pass
  static constexpr int kNTiles = kBlockN / 8;
  static constexpr size_t kQElems = static_cast<size_t>(kBlockM) * kRowChunks * 8;
  static constexpr size_t kKVElems = static_cast<size_t>(kBlockN) * kRowChunks * 8;
  static constexpr size_t kPElems = static_cast<size_t>(32) * kPRowChunks * 8;  // per warp
  static constexpr size_t kSmemBytes = (kQElems + 2 * kKVElems + kNumWarps * kPElems) * 2;
  static_assert(kHeadDim % (16 * kDSplit) == 0 && kBlockN % 16 == 0, "tile sizes");
};

// Global rows [row0, row0 + rows) -> swizzled shared tile, through registers; rows at or past
// `limit` are zero.
template <class T>
__device__ __forceinline__ void sm70_load_tile(__half* smem, const __half* gmem, int64_t row_stride,
                                               int row0, int rows, int limit) {
  for (int i = threadIdx.x; i < rows * T::kChunks; i += T::kThreads) {
    const int r = i / T::kChunks;
    const int c = i - r * T::kChunks;
    uint4 v = make_uint4(0, 0, 0, 0);
    if (row0 + r < limit) {
      v = *reinterpret_cast<const uint4*>(gmem + static_cast<int64_t>(row0 + r) * row_stride +
                                          c * 8);
    }
    *reinterpret_cast<uint4*>(smem + sm70_offset<T::kRowChunks, T::kSwizzle>(r, c * 8)) = v;
  }
}

template <class T>
__global__ void __launch_bounds__(T::kThreads) fmha_fwd_sm70_kernel(const FmhaDeviceParams p) {
  constexpr int kBlockM = T::kBlockM, kBlockN = T::kBlockN;
  constexpr int kRC = T::kRowChunks, kPRC = T::kPRowChunks;
  constexpr int kNTiles = T::kNTiles, kDTiles = T::kDTiles;
  constexpr bool kSw = T::kSwizzle;

  extern __shared__ __align__(16) unsigned char smem_raw[];
  __half* sQ = reinterpret_cast<__half*>(smem_raw);
  __half* sK = sQ + T::kQElems;
  __half* sV = sK + T::kKVElems;

  const FmhaBlockInfo info(p, blockIdx.x, blockIdx.y, blockIdx.z, kBlockM, kBlockN);
  if (info.row_lo >= info.seqlen_q) return;
  const int head = blockIdx.y;
  const int kv_head = head / (p.num_heads_q / p.num_heads_k);

  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int qp = (lane >> 2) & 3;               // quad-pair
  const int qi = (lane & 3) + 4 * (lane >> 4);  // thread index inside the quad-pair
  const int i0 = lane & 1, i1 = (lane >> 1) & 1, i2 = lane >> 4;
  __half* sP = sV + T::kKVElems + warp * T::kPElems;
  const int warp_row0 = warp * 32;            // first row of this warp in the block
  const int a_row = warp_row0 + qp * 8 + qi;  // the row this thread feeds as A
  // The two accumulator rows this thread holds (h = v1), relative to the warp.
  const int acc_row[2] = {qp * 8 + i0 + 4 * i2, qp * 8 + i0 + 2 + 4 * i2};

  const __half* q_base = info.q_ptr<__half>(p, head);
  const __half* k_base = info.k_ptr<__half>(p, kv_head);
  const __half* v_base = info.v_ptr<__half>(p, kv_head);

  if (info.nb_begin < info.nb_end) {
    sm70_load_tile<T>(sQ, q_base, p.q_row_stride, info.row_lo, kBlockM, info.seqlen_q);
  }
#pragma unroll 1
  for (int dh = 0; dh < T::kDSplit; ++dh) {  // column slice [d0, d0 + kDTiles * 8) of O
    const int d0 = dh * kDTiles * 8;
    float o[kDTiles][8];
#pragma unroll
    for (int dt = 0; dt < kDTiles; ++dt)
#pragma unroll
      for (int v = 0; v < 8; ++v) o[dt][v] = 0.f;
    float row_max[2] = {-INFINITY, -INFINITY};
    float row_sum[2] = {0.f, 0.f};

    for (int nb = info.nb_begin; nb < info.nb_end; ++nb) {
      __syncthreads();  // every warp is done with the previous K / V
      sm70_load_tile<T>(sK, k_base, p.k_row_stride, nb * kBlockN, kBlockN, info.seqlen_k);
      sm70_load_tile<T>(sV, v_base, p.v_row_stride, nb * kBlockN, kBlockN, info.seqlen_k);
      __syncthreads();

      // S = Q K^T: per 16-byte chunk of the head dim, two k4 steps.
      float s[kNTiles][8];
#pragma unroll
      for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
        for (int v = 0; v < 8; ++v) s[nt][v] = 0.f;
#pragma unroll
      for (int kc = 0; kc < T::kChunks; ++kc) {
        const uint4 a = *reinterpret_cast<const uint4*>(sQ + sm70_offset<kRC, kSw>(a_row, kc * 8));
#pragma unroll
        for (int nt = 0; nt < kNTiles; ++nt) {
          const uint4 b =
              *reinterpret_cast<const uint4*>(sK + sm70_offset<kRC, kSw>(nt * 8 + qi, kc * 8));
          mma884<false>(s[nt], a.x, a.y, b.x, b.y);
          mma884<false>(s[nt], a.z, a.w, b.z, b.w);
        }
      }

      // Scale, mask, online softmax (rows live in lanes l and l ^ 2).
      const bool need_mask =
          info.block_needs_mask(p, nb, kBlockM, kBlockN) || p.alibi_slopes != nullptr;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int q_row = info.row_lo + warp_row0 + acc_row[h];
        float mx = -INFINITY;
#pragma unroll
        for (int nt = 0; nt < kNTiles; ++nt) {
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            const int v = (j & 1) + 2 * h + 4 * (j >> 1);
            float x = s[nt][v] * p.scale_log2;
            if (need_mask) {
              const int k_col = nb * kBlockN + nt * 8 + (j & 1) + 2 * i1 + 4 * (j >> 1);
              x = info.masked(p, x, q_row, k_col);
            }
            s[nt][v] = x;
            mx = fmaxf(mx, x);
          }
        }
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const OnlineSoftmaxStep step = online_softmax_step(row_max[h], mx);
        float sum = 0.f;
#pragma unroll
        for (int nt = 0; nt < kNTiles; ++nt) {
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            const int v = (j & 1) + 2 * h + 4 * (j >> 1);
            s[nt][v] = exp2f(s[nt][v] - step.base);
            sum += s[nt][v];
          }
        }
        row_sum[h] = row_sum[h] * step.alpha + sum;
#pragma unroll
        for (int dt = 0; dt < kDTiles; ++dt) {
#pragma unroll
          for (int j = 0; j < 4; ++j) o[dt][(j & 1) + 2 * h + 4 * (j >> 1)] *= step.alpha;
        }
      }

      // P -> this warp's shared tile (fp16, swizzled), then back as row-major A fragments.
#pragma unroll
      for (int nt = 0; nt < kNTiles; ++nt) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
#pragma unroll
          for (int v2 = 0; v2 < 2; ++v2) {
            const int col = nt * 8 + 2 * i1 + 4 * v2;
            const __half2 pair =
                __floats2half2_rn(s[nt][2 * h + 4 * v2], s[nt][1 + 2 * h + 4 * v2]);
            *reinterpret_cast<__half2*>(sP + sm70_offset<kPRC, kSw>(acc_row[h], col)) = pair;
          }
        }
      }
      __syncwarp();

      // O += P V: per 8 keys (one 16-byte chunk of P), two k4 steps.
#pragma unroll
      for (int kc = 0; kc < kBlockN / 8; ++kc) {
        const uint4 a =
            *reinterpret_cast<const uint4*>(sP + sm70_offset<kPRC, kSw>(qp * 8 + qi, kc * 8));
#pragma unroll
        for (int step = 0; step < 2; ++step) {
          const int key = kc * 8 + step * 4 + (lane & 3);
          const uint32_t a0 = step ? a.z : a.x, a1 = step ? a.w : a.y;
#pragma unroll
          for (int dt = 0; dt < kDTiles; ++dt) {
            const uint2 b = *reinterpret_cast<const uint2*>(
                sV + sm70_offset<kRC, kSw>(key, d0 + dt * 8 + 4 * (lane >> 4)));
            mma884<true>(o[dt], a0, a1, b.x, b.y);
          }
        }
      }
      __syncwarp();  // P is rewritten next block
    }

    // Epilogue: normalise and write the two rows this thread holds; lanes with i1 == 0 write LSE.
    __half* o_base = static_cast<__half*>(p.out) +
                     static_cast<int64_t>(info.q_start) * p.o_row_stride + head * p.o_head_stride;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float sum = row_sum[h];
      sum += __shfl_xor_sync(0xffffffffu, sum, 2);
      const float inv = sum != 0.f ? 1.f / sum : 0.f;
      const int q_row = info.row_lo + warp_row0 + acc_row[h];
      if (q_row < info.seqlen_q) {
        __half* dst = o_base + static_cast<int64_t>(q_row) * p.o_row_stride;
#pragma unroll
        for (int dt = 0; dt < kDTiles; ++dt) {
#pragma unroll
          for (int v2 = 0; v2 < 2; ++v2) {
            const int v = 2 * h + 4 * v2;
            *reinterpret_cast<__half2*>(dst + d0 + dt * 8 + 2 * i1 + 4 * v2) =
                __floats2half2_rn(o[dt][v] * inv, o[dt][v + 1] * inv);
          }
        }
        if (p.lse != nullptr && i1 == 0 && dh == 0) {
          p.lse[head * p.lse_head_stride + info.q_start + q_row] = row_lse(row_max[h], sum);
        }
      }
    }
  }  // column slices
}

}  // namespace fastattn::kernels::cuda
