// Small-batch GEMV on tensor cores: y[M, N] = x[M, K] w[N, K]^T (+ bias) for 1 <= M <= 16.
//
// Decode multiplies a few tokens by every weight matrix once per step, so the step is as fast as
// the weights stream from DRAM. The kernel reads w with 16-byte streaming loads straight into
// MMA registers (no shared memory, no ldmatrix) and lets the weights be the MMA's A operand
// ("swap AB": 16 output features x 16 k) and the tokens its B operand (16 k x 8 tokens), so one
// m16n8k16 covers up to 8 tokens and the tensor cores are never the limit.
//
// The k permutation that makes this work: thread (g = lane / 4, t = lane % 4) loads 8
// consecutive k of weight rows g and g + 8 and 8 consecutive k of token g, at k = 32 c + 8 t for
// chunk c. A dot product does not care in which order its k are summed, as long as A and B use
// the same order; so elements {0,1} of each vector fill MMA k slots {2t, 2t+1}, elements {2,3}
// slots {2t+8, 2t+9} (first MMA), elements {4..7} the same slots of a second MMA. Both operands
// then sit exactly where the m16n8k16 fragment layout (mma_m16n8.cuh) wants them.
//
// Each block owns 16 output features; its warps split K (warp w takes chunks w*U .. w*U+U-1,
// then every warps*U-th), each accumulates in float32, and warp 0 adds the warps' partial sums in
// a fixed order: the result does not depend on M or on the other tokens of the batch (a decode
// batch padded to a CUDA-graph bucket gives the same logits bit for bit).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>

#include "fastattn/core/cuda/cuda_check.h"
#include "fastattn/core/cuda/dtype_vec.cuh"
#include "fastattn/core/error.h"
#include "fastattn/kernels/cuda/gemv_launch.h"
#include "fastattn/kernels/cuda/mma_m16n8.cuh"

namespace fastattn::kernels::cuda {
namespace {

constexpr int kRowsPerBlock = 16;  // output features per block: the MMA's M
constexpr int kChunkK = 32;        // k per warp per chunk: 4 threads x 8 elements
constexpr int kUnroll = 4;  // chunks in flight per warp (16-byte loads per thread: 2 x kUnroll)

// 16 bytes of w, read once: bypass L1 and ask L2 to fetch the whole 256-byte line ahead.
__device__ __forceinline__ uint4 load_weights(const uint16_t* p) {
  uint4 v;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
#else
  v = __ldg(reinterpret_cast<const uint4*>(p));
#endif
  return v;
}

// One warp's registers for kUnroll chunks: 16 bytes of weight rows g and g + 8 and of each token
// tile's token g, per chunk.
template <int kTiles>
struct Group {
  uint4 a[kUnroll], b[kUnroll], x[kTiles][kUnroll];
};

template <int kTiles>
__device__ __forceinline__ void load_group(Group<kTiles>& r, int c0, int K, int t,
                                           const uint16_t* wa, bool ok_a, const uint16_t* wb,
                                           bool ok_b, const uint16_t* const (&xr)[kTiles],
                                           const bool (&ok_x)[kTiles]) {
  const uint4 zero = make_uint4(0, 0, 0, 0);
#pragma unroll
  for (int u = 0; u < kUnroll; ++u) {
    const int k = (c0 + u) * kChunkK + t * 8;
    const bool in = k < K;  // K % 8 == 0: a vector lies wholly inside or outside
    r.a[u] = in && ok_a ? load_weights(wa + k) : zero;
    r.b[u] = in && ok_b ? load_weights(wb + k) : zero;
#pragma unroll
    for (int j = 0; j < kTiles; ++j)
      r.x[j][u] = in && ok_x[j] ? __ldg(reinterpret_cast<const uint4*>(xr[j] + k)) : zero;
  }
}

template <class Element, int kTiles>
__device__ __forceinline__ void mma_group(float (&acc)[kTiles][4], const Group<kTiles>& r) {
#pragma unroll
  for (int u = 0; u < kUnroll; ++u) {
    const uint32_t lo[4] = {r.a[u].x, r.b[u].x, r.a[u].y, r.b[u].y};  // k elements 0..3
    const uint32_t hi[4] = {r.a[u].z, r.b[u].z, r.a[u].w, r.b[u].w};  // k elements 4..7
#pragma unroll
    for (int j = 0; j < kTiles; ++j) {
      Mma16816::mma<Element>(acc[j], lo, r.x[j][u].x, r.x[j][u].y);
      Mma16816::mma<Element>(acc[j], hi, r.x[j][u].z, r.x[j][u].w);
    }
  }
}

// The weights of kUnroll chunks only (rows g and g + 8): the three-stage form keeps three of these
// in flight and reads the tokens just before their MMAs (they are a few KB, hot in L1), so a
// warp's registers hold more weight bytes in flight.
struct WeightGroup {
  uint4 a[kUnroll], b[kUnroll];
};

__device__ __forceinline__ void load_weight_group(WeightGroup& r, int c0, int K, int t,
                                                  const uint16_t* wa, bool ok_a, const uint16_t* wb,
                                                  bool ok_b) {
  const uint4 zero = make_uint4(0, 0, 0, 0);
#pragma unroll
  for (int u = 0; u < kUnroll; ++u) {
    const int k = (c0 + u) * kChunkK + t * 8;
    const bool in = k < K;
    r.a[u] = in && ok_a ? load_weights(wa + k) : zero;
    r.b[u] = in && ok_b ? load_weights(wb + k) : zero;
  }
}

template <class Element, int kTiles>
__device__ __forceinline__ void mma_weight_group(float (&acc)[kTiles][4], const WeightGroup& r,
                                                 int c0, int K, int t,
                                                 const uint16_t* const (&xr)[kTiles],
                                                 const bool (&ok_x)[kTiles]) {
  const uint4 zero = make_uint4(0, 0, 0, 0);
#pragma unroll
  for (int u = 0; u < kUnroll; ++u) {
    const int k = (c0 + u) * kChunkK + t * 8;
    const bool in = k < K;
    const uint32_t lo[4] = {r.a[u].x, r.b[u].x, r.a[u].y, r.b[u].y};
    const uint32_t hi[4] = {r.a[u].z, r.b[u].z, r.a[u].w, r.b[u].w};
#pragma unroll
    for (int j = 0; j < kTiles; ++j) {
      const uint4 x = in && ok_x[j] ? __ldg(reinterpret_cast<const uint4*>(xr[j] + k)) : zero;
      Mma16816::mma<Element>(acc[j], lo, x.x, x.y);
      Mma16816::mma<Element>(acc[j], hi, x.z, x.w);
    }
  }
}

// kTiles: n8 token tiles (1 for M <= 8, 2 for M <= 16). Element: __half or __nv_bfloat16.
// kStages: 2 = software-pipelined (a warp's next group of loads is issued before the MMAs of the
// current one), 1 = not (fewer registers, more resident warps), 3 = three groups of weights
// only in turn, the tokens read just before their MMAs.
template <class Element, int kTiles, int kStages>
__global__ void __launch_bounds__(kSmallBatchGemvMaxWarps * 32)
    small_batch_gemv_kernel(const SmallBatchGemvLaunch p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  __shared__ float partial[kSmallBatchGemvMaxWarps][kTiles * 4][32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int warps = blockDim.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int64_t row_a = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + g;
  const int64_t row_b = row_a + 8;
  const bool ok_a = row_a < p.N, ok_b = row_b < p.N;
  const auto* w = static_cast<const uint16_t*>(p.w);
  const uint16_t* wa = w + (ok_a ? row_a : 0) * p.K;
  const uint16_t* wb = w + (ok_b ? row_b : 0) * p.K;
  const uint16_t* xr[kTiles];
  bool ok_x[kTiles];
#pragma unroll
  for (int j = 0; j < kTiles; ++j) {
    const int m = j * 8 + g;
    ok_x[j] = m < p.M;
    xr[j] = static_cast<const uint16_t*>(p.x) + (ok_x[j] ? m : 0) * p.ldx;
  }

  float acc[kTiles][4];
#pragma unroll
  for (int j = 0; j < kTiles; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.f;

  const int chunks = (p.K + kChunkK - 1) / kChunkK;
  const int stride = warps * kUnroll;
  int c0 = warp * kUnroll;
  if constexpr (kStages == 1) {
    for (; c0 < chunks; c0 += stride) {
      Group<kTiles> g0;
      load_group(g0, c0, p.K, t, wa, ok_a, wb, ok_b, xr, ok_x);
      mma_group<Element>(acc, g0);
    }
  } else if constexpr (kStages == 3) {
    WeightGroup g0, g1, g2;
    load_weight_group(g0, c0, p.K, t, wa, ok_a, wb, ok_b);
    if (c0 + stride < chunks) load_weight_group(g1, c0 + stride, p.K, t, wa, ok_a, wb, ok_b);
    while (c0 < chunks) {
      if (c0 + 2 * stride < chunks)
        load_weight_group(g2, c0 + 2 * stride, p.K, t, wa, ok_a, wb, ok_b);
      mma_weight_group<Element>(acc, g0, c0, p.K, t, xr, ok_x);
      c0 += stride;
      if (c0 >= chunks) break;
      if (c0 + 2 * stride < chunks)
        load_weight_group(g0, c0 + 2 * stride, p.K, t, wa, ok_a, wb, ok_b);
      mma_weight_group<Element>(acc, g1, c0, p.K, t, xr, ok_x);
      c0 += stride;
      if (c0 >= chunks) break;
      if (c0 + 2 * stride < chunks)
        load_weight_group(g1, c0 + 2 * stride, p.K, t, wa, ok_a, wb, ok_b);
      mma_weight_group<Element>(acc, g2, c0, p.K, t, xr, ok_x);
      c0 += stride;
    }
  } else {
    // Two register groups in turn (no copy from one to the other: a move would wait for the loads).
    Group<kTiles> g0, g1;
    load_group(g0, c0, p.K, t, wa, ok_a, wb, ok_b, xr, ok_x);
    while (c0 < chunks) {
      if (c0 + stride < chunks) load_group(g1, c0 + stride, p.K, t, wa, ok_a, wb, ok_b, xr, ok_x);
      mma_group<Element>(acc, g0);
      c0 += stride;
      if (c0 >= chunks) break;
      if (c0 + stride < chunks) load_group(g0, c0 + stride, p.K, t, wa, ok_a, wb, ok_b, xr, ok_x);
      mma_group<Element>(acc, g1);
      c0 += stride;
    }
  }

#pragma unroll
  for (int j = 0; j < kTiles; ++j) {
#pragma unroll
    for (int i = 0; i < 4; ++i) partial[warp][j * 4 + i][lane] = acc[j][i];
  }
  __syncthreads();
  if (warp != 0) return;
#pragma unroll
  for (int j = 0; j < kTiles; ++j) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {  // C fragment: c0, c1 row g, tokens 2t, 2t+1; c2, c3 row g + 8
      const int64_t row = i < 2 ? row_a : row_b;
      const int token = j * 8 + 2 * t + (i & 1);
      if (row >= p.N || token >= p.M) continue;
      float sum = 0.f;
      for (int v = 0; v < warps; ++v) sum += partial[v][j * 4 + i][lane];
      if (p.bias != nullptr)
        sum += round_to_dtype(p.y_type, load_elem_any(p.bias, p.bias_type, row));
      store_elem_any(p.y, p.y_type, token * p.ldy + row, sum);
    }
  }
#else
  __trap();  // launched on sm_80+ only (small_batch_gemv_fits)
#endif
}

template <class Element, int kStages>
void launch_typed(const SmallBatchGemvLaunch& p, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>((p.N + kRowsPerBlock - 1) / kRowsPerBlock));
  const dim3 block(static_cast<unsigned>(p.warps * 32));
  if (p.M <= 8) {
    small_batch_gemv_kernel<Element, 1, kStages><<<grid, block, 0, stream>>>(p);
  } else {
    small_batch_gemv_kernel<Element, 2, kStages><<<grid, block, 0, stream>>>(p);
  }
}

}  // namespace

bool small_batch_gemv_fits(int cc, DType dtype, int64_t M, int64_t K, const void* x, int64_t ldx,
                           const void* w) {
  const auto aligned16 = [](const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; };
  return cc >= 80 && (dtype == DType::kFloat16 || dtype == DType::kBFloat16) && M >= 1 &&
         M <= kSmallBatchGemvMaxRows && K > 0 && K % 8 == 0 && ldx % 8 == 0 && aligned16(x) &&
         aligned16(w);
}

int small_batch_gemv_warps(int64_t N, int64_t K, int sms) {
  // About 32 resident warps per SM over the whole grid (each keeps 2 x kUnroll 16-byte loads per
  // lane in flight), at most 8 per block, and none without a whole unrolled group of chunks.
  const int64_t blocks = (N + kRowsPerBlock - 1) / kRowsPerBlock;
  const int64_t want = static_cast<int64_t>(sms) * 32 / std::max<int64_t>(blocks, 1);
  const int64_t by_k = (K + kChunkK * kUnroll - 1) / (kChunkK * kUnroll);
  const int64_t cap = std::min<int64_t>({want, by_k, 8});
  int warps = 1;
  while (warps * 2 <= cap) warps *= 2;
  return warps;
}

void launch_small_batch_gemv(const SmallBatchGemvLaunch& p, cudaStream_t stream) {
  FA_CHECK(p.warps >= 1 && p.warps <= kSmallBatchGemvMaxWarps,
           "small-batch GEMV: warps must be 1..", kSmallBatchGemvMaxWarps, ", got ", p.warps);
  FA_CHECK(p.stages >= 1 && p.stages <= 3, "small-batch GEMV: stages must be 1, 2 or 3, got ",
           p.stages);
  const bool bf16 = p.dtype == DType::kBFloat16;
  if (p.stages == 3) {
    bf16 ? launch_typed<__nv_bfloat16, 3>(p, stream) : launch_typed<__half, 3>(p, stream);
  } else if (p.stages == 2) {
    bf16 ? launch_typed<__nv_bfloat16, 2>(p, stream) : launch_typed<__half, 2>(p, stream);
  } else {
    bf16 ? launch_typed<__nv_bfloat16, 1>(p, stream) : launch_typed<__half, 1>(p, stream);
  }
}

}  // namespace fastattn::kernels::cuda
