// The FlashAttention-2 forward mainloop for the m16n8 MMA family (16816 on sm_80+, 1688 on sm_75).
//
// One CTA computes kBlockM query rows of one head of one sequence; each of its warps owns
// kWarpM = kBlockM / kNumWarps rows (kMTiles m16 tiles). The CTA walks the K/V blocks that the
// mask leaves visible (causal / window ranges are cut at block granularity, so fully masked
// tiles are never loaded or computed); element masks are applied only on the boundary blocks.
//
// Shared memory (rows padded by 8 elements = 16 bytes, so a row is an odd number of 16-byte
// chunks and the 8 row addresses of each ldmatrix phase hit 8 different bank groups):
//   sQ [kBlockM][D + 8]   loaded once
//   sK [kBlockN][D + 8]   K block j
//   sV [kBlockN][D + 8]   V block j
// Pipeline per block j (cp.async on sm_80+; register-staged copies on sm_75):
//   wait K_j, barrier | issue V_j | S = Q K_j^T | mask, online softmax | wait V_j, barrier |
//   issue K_{j+1} | O += P V_j
// so each load overlaps the previous product. Softmax runs in the log2 domain (exp2f), the row
// max and sum live in registers, O is rescaled by exp2(m_old - m_new), and the output is written
// once at the end (with the natural-log LSE when asked).
#pragma once

#include <cuda_runtime.h>

#include <cfloat>
#include <cmath>
#include <type_traits>

#include "fastattn/kernels/cuda/attention/fmha_common.cuh"
#include "fastattn/kernels/cuda/attention/fmha_device_params.h"
#include "fastattn/kernels/cuda/mma_m16n8.cuh"

namespace fastattn::kernels::cuda {

template <class Mma_, typename Element_, int kHeadDim_, int kBlockM_, int kBlockN_, int kNumWarps_>
struct FmhaTraits {
  using Mma = Mma_;
  using Element = Element_;
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kBlockM = kBlockM_;
  static constexpr int kBlockN = kBlockN_;
  static constexpr int kNumWarps = kNumWarps_;
  static constexpr int kThreads = kNumWarps * 32;
  static constexpr int kWarpM = kBlockM / kNumWarps;
  static constexpr int kMTiles = kWarpM / 16;
  static constexpr int kNTiles = kBlockN / 8;   // n8 tiles of S
  static constexpr int kDTiles = kHeadDim / 8;  // n8 tiles of O
  static constexpr int kKSteps = kHeadDim / 16;
  static constexpr int kRowElems = kHeadDim + 8;
  static constexpr int kChunksPerRow = kHeadDim / 8;  // 16-byte chunks
  static constexpr size_t kSmemBytes =
      static_cast<size_t>(kBlockM + 2 * kBlockN) * kRowElems * sizeof(Element);
  static_assert(kHeadDim % 16 == 0, "head dim must be a multiple of 16");
  static_assert(kWarpM % 16 == 0 && kMTiles >= 1, "each warp owns whole m16 tiles");
  static_assert(kBlockN % 16 == 0, "K/V block must be a multiple of 16 rows");
};

// Copies rows [row0, row0 + rows) of a [*, D] matrix (row stride in elements) into a padded
// shared tile; rows at or past `limit` are zero-filled.
template <class T>
__device__ __forceinline__ void load_tile(typename T::Element* smem,
                                          const typename T::Element* gmem, int64_t row_stride,
                                          int row0, int rows, int limit) {
  constexpr int kChunks = T::kChunksPerRow;
  for (int i = threadIdx.x; i < rows * kChunks; i += T::kThreads) {
    const int r = i / kChunks;
    const int c = i - r * kChunks;
    const int row = row0 + r;
    const bool valid = row < limit;
    const typename T::Element* src =
        gmem + (valid ? static_cast<int64_t>(row) * row_stride : 0) + c * 8;
    cp_async_16(smem_u32(smem + r * T::kRowElems + c * 8), src, valid ? 16 : 0);
  }
}

template <class T>
__global__ void __launch_bounds__(T::kThreads) fmha_fwd_kernel(const FmhaDeviceParams p) {
  using Element = typename T::Element;
  using Mma = typename T::Mma;
  constexpr int kBlockM = T::kBlockM, kBlockN = T::kBlockN, kMTiles = T::kMTiles;
  constexpr int kNTiles = T::kNTiles, kDTiles = T::kDTiles, kRowElems = T::kRowElems;

  extern __shared__ __align__(16) unsigned char smem_raw[];
  Element* sQ = reinterpret_cast<Element*>(smem_raw);
  Element* sK = sQ + kBlockM * kRowElems;
  Element* sV = sK + kBlockN * kRowElems;

  const FmhaBlockInfo info(p, blockIdx.x, blockIdx.y, blockIdx.z, kBlockM, kBlockN);
  if (info.row_lo >= info.seqlen_q) return;
  const int head = blockIdx.y;
  const int kv_head = head / (p.num_heads_q / p.num_heads_k);
  const int row_lo = info.row_lo, seqlen_q = info.seqlen_q, seqlen_k = info.seqlen_k;
  const int nb_begin = info.nb_begin, nb_end = info.nb_end;

  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int g = lane / 4;
  const int t = lane % 4;

  const Element* q_base = info.q_ptr<Element>(p, head);
  const Element* k_base = info.k_ptr<Element>(p, kv_head);
  const Element* v_base = info.v_ptr<Element>(p, kv_head);

  float o[kMTiles][kDTiles][4];
  float row_max[kMTiles][2];
  float row_sum[kMTiles][2];
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt) {
#pragma unroll
    for (int dt = 0; dt < kDTiles; ++dt)
      o[mt][dt][0] = o[mt][dt][1] = o[mt][dt][2] = o[mt][dt][3] = 0.f;
    row_max[mt][0] = row_max[mt][1] = -INFINITY;
    row_sum[mt][0] = row_sum[mt][1] = 0.f;
  }

  if (nb_begin < nb_end) {
    load_tile<T>(sQ, q_base, p.q_row_stride, row_lo, kBlockM, seqlen_q);
    load_tile<T>(sK, k_base, p.k_row_stride, nb_begin * kBlockN, kBlockN, seqlen_k);
    cp_async_commit();
  }

  for (int nb = nb_begin; nb < nb_end; ++nb) {
    cp_async_wait<0>();
    __syncthreads();  // K_nb (and Q) visible; every warp is done with V_{nb-1}
    load_tile<T>(sV, v_base, p.v_row_stride, nb * kBlockN, kBlockN, seqlen_k);
    cp_async_commit();

    // S = Q K^T for this warp's rows.
    float s[kMTiles][kNTiles][4];
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
      for (int nt = 0; nt < kNTiles; ++nt)
        s[mt][nt][0] = s[mt][nt][1] = s[mt][nt][2] = s[mt][nt][3] = 0.f;
#pragma unroll
    for (int ks = 0; ks < T::kKSteps; ++ks) {
      uint32_t a[kMTiles][4];
#pragma unroll
      for (int mt = 0; mt < kMTiles; ++mt) {
        const int row = warp * T::kWarpM + mt * 16 + (lane % 16);
        ldmatrix_x4(a[mt], smem_u32(sQ + row * kRowElems + ks * 16 + (lane / 16) * 8));
      }
#pragma unroll
      for (int np = 0; np < kNTiles / 2; ++np) {
        uint32_t b[4];
        const int n = np * 16 + (lane / 16) * 8 + (lane % 8);
        ldmatrix_x4(b, smem_u32(sK + n * kRowElems + ks * 16 + ((lane / 8) % 2) * 8));
#pragma unroll
        for (int mt = 0; mt < kMTiles; ++mt) {
          Mma::template mma<Element>(s[mt][2 * np], a[mt], b[0], b[1]);
          Mma::template mma<Element>(s[mt][2 * np + 1], a[mt], b[2], b[3]);
        }
      }
    }

    // Softmax in the log2 domain. Without ALiBi the scores stay raw here (masked ones -inf) and
    // the scale is folded into the exp2 argument, one FFMA per element: sc = scale * log2(e).
    // With ALiBi the bias is added to scaled scores first, and sc = 1.
    const int col0 = nb * kBlockN;
    const bool need_mask = info.block_needs_mask(p, nb, kBlockM, kBlockN);
    const bool alibi = p.alibi_slopes != nullptr;
    const float sc = alibi ? 1.f : p.scale_log2;
    if (need_mask || alibi) {
#pragma unroll
      for (int mt = 0; mt < kMTiles; ++mt) {
#pragma unroll
        for (int nt = 0; nt < kNTiles; ++nt) {
#pragma unroll
          for (int i = 0; i < 4; ++i) {
            const int q_row = row_lo + warp * T::kWarpM + mt * 16 + g + (i / 2) * 8;
            const int k_col = col0 + nt * 8 + 2 * t + (i % 2);
            const float x =
                info.masked(p, alibi ? s[mt][nt][i] * p.scale_log2 : s[mt][nt][i], q_row, k_col);
            s[mt][nt][i] = x;
          }
        }
      }
    }

    // Online softmax: new row max, rescale O and the running sum, P = exp2(S * sc - max).
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        float mx = -INFINITY;
#pragma unroll
        for (int nt = 0; nt < kNTiles; ++nt)
          mx = fmaxf(mx, fmaxf(s[mt][nt][2 * h], s[mt][nt][2 * h + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const OnlineSoftmaxStep step = online_softmax_step(row_max[mt][h], mx * sc);
        float sum = 0.f;
#pragma unroll
        for (int nt = 0; nt < kNTiles; ++nt) {
          const float p0 = fast_exp2(fmaf(s[mt][nt][2 * h], sc, -step.base));
          const float p1 = fast_exp2(fmaf(s[mt][nt][2 * h + 1], sc, -step.base));
          s[mt][nt][2 * h] = p0;
          s[mt][nt][2 * h + 1] = p1;
          sum += p0 + p1;
        }
        row_sum[mt][h] = row_sum[mt][h] * step.alpha + sum;
#pragma unroll
        for (int dt = 0; dt < kDTiles; ++dt) {
          o[mt][dt][2 * h] *= step.alpha;
          o[mt][dt][2 * h + 1] *= step.alpha;
        }
      }
    }

    cp_async_wait<0>();
    __syncthreads();  // V_nb visible; every warp is done reading K_nb
    if (nb + 1 < nb_end) {
      load_tile<T>(sK, k_base, p.k_row_stride, (nb + 1) * kBlockN, kBlockN, seqlen_k);
      cp_async_commit();
    }

    // O += P V: the S accumulators become the A operand in registers.
#pragma unroll
    for (int kk = 0; kk < kBlockN / 16; ++kk) {
      uint32_t a[kMTiles][4];
#pragma unroll
      for (int mt = 0; mt < kMTiles; ++mt) {
        a[mt][0] = pack2<Element>(s[mt][2 * kk][0], s[mt][2 * kk][1]);
        a[mt][1] = pack2<Element>(s[mt][2 * kk][2], s[mt][2 * kk][3]);
        a[mt][2] = pack2<Element>(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
        a[mt][3] = pack2<Element>(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
      }
#pragma unroll
      for (int dp = 0; dp < kDTiles / 2; ++dp) {
        uint32_t b[4];
        const int n = kk * 16 + ((lane / 8) % 2) * 8 + (lane % 8);
        ldmatrix_x4_trans(b, smem_u32(sV + n * kRowElems + dp * 16 + (lane / 16) * 8));
#pragma unroll
        for (int mt = 0; mt < kMTiles; ++mt) {
          Mma::template mma<Element>(o[mt][2 * dp], a[mt], b[0], b[1]);
          Mma::template mma<Element>(o[mt][2 * dp + 1], a[mt], b[2], b[3]);
        }
      }
    }
  }

  // Epilogue: normalise, write O (and the LSE) once.
  Element* o_base = static_cast<Element*>(p.out) +
                    static_cast<int64_t>(info.q_start) * p.o_row_stride + head * p.o_head_stride;
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float sum = row_sum[mt][h];
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      sum += __shfl_xor_sync(0xffffffffu, sum, 2);
      const float inv = sum != 0.f ? 1.f / sum : 0.f;
      const int q_row = row_lo + warp * T::kWarpM + mt * 16 + g + h * 8;
      if (q_row < seqlen_q) {
        Element* dst = o_base + static_cast<int64_t>(q_row) * p.o_row_stride + 2 * t;
#pragma unroll
        for (int dt = 0; dt < kDTiles; ++dt) {
          *reinterpret_cast<uint32_t*>(dst + dt * 8) =
              pack2<Element>(o[mt][dt][2 * h] * inv, o[mt][dt][2 * h + 1] * inv);
        }
        if (p.lse != nullptr && t == 0) {
          p.lse[head * p.lse_head_stride + info.q_start + q_row] = row_lse(row_max[mt][h], sum);
        }
      }
    }
  }
}

}  // namespace fastattn::kernels::cuda
