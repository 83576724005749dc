// Where a split-KV decode CTA's rows and keys are (DecodeTileInfo), its shared-memory layout,
// and the two ways K / V tiles reach shared memory: cp.async stages, or 16-byte loads staged in
// registers (the sm_70 / sm_75 path). Used by decode_kernel.cuh.
#pragma once

#include "fastattn/kernels/cuda/attention/decode/decode_common.cuh"
#include "fastattn/kernels/cuda/attention/decode/decode_params.h"
#include "fastattn/kernels/cuda/mma_m16n8.cuh"

namespace fastattn::kernels::cuda::decode {

// Where this CTA's rows and keys are.
struct DecodeTileInfo {
  int batch, kv_head;
  int q_start, seqlen_q;   // this sequence's rows of q / out
  int k_start, seqlen_k;   // contiguous KV: its rows of k / v
  int row0, rows;          // first (token, head) row of the tile, valid rows in it
  int diag_lo, diag_hi;    // key position of the first / last query token of the tile
  int split_lo, split_hi;  // keys [split_lo, split_hi) of this split
};

__device__ __forceinline__ bool tile_info(const DecodeDeviceParams& p, int block_n, int k_rows,
                                          DecodeTileInfo& t) {
  const int q_tile = blockIdx.x / p.num_heads_k;
  t.kv_head = blockIdx.x - q_tile * p.num_heads_k;
  t.batch = blockIdx.z;
  t.q_start = p.cu_seqlens_q[t.batch];
  t.seqlen_q = p.cu_seqlens_q[t.batch + 1] - t.q_start;
  if (p.block_table != nullptr) {
    t.k_start = 0;
    t.seqlen_k = p.seqlens_k[t.batch];
  } else {
    t.k_start = p.cu_seqlens_k[t.batch];
    t.seqlen_k = p.cu_seqlens_k[t.batch + 1] - t.k_start;
  }
  const int total_rows = t.seqlen_q * p.group;
  t.row0 = q_tile * k_rows;
  if (t.row0 >= total_rows) return false;
  t.rows = min(k_rows, total_rows - t.row0);
  const int offset = t.seqlen_k - t.seqlen_q;  // bottom-right alignment
  t.diag_lo = t.row0 / p.group + offset;
  t.diag_hi = (t.row0 + t.rows - 1) / p.group + offset;
  // Keys some row of the tile can see, cut into num_splits runs of whole tiles.
  const int n_begin = p.window_left >= 0 ? max(0, t.diag_lo - p.window_left) : 0;
  const int n_end =
      p.window_right >= 0 ? min(t.seqlen_k, t.diag_hi + p.window_right + 1) : t.seqlen_k;
  const int tiles = n_end > n_begin ? (n_end - n_begin + block_n - 1) / block_n : 0;
  const int per_split = (tiles + p.num_splits - 1) / p.num_splits;
  t.split_lo = n_begin + blockIdx.y * per_split * block_n;
  t.split_hi = min(n_end, t.split_lo + per_split * block_n);
  return true;
}

__device__ __forceinline__ int block_index(const DecodeDeviceParams& p, int key) {
  return p.block_shift >= 0 ? key >> p.block_shift : key / p.block_size;
}

// Paged KV: the cache block of each row this thread copies in the next tile it copies. Loaded
// one tile ahead, so a block-table lookup's latency does not sit in front of the K / V loads.
template <class T>
struct BlockIds {
  int id[T::kLoadIters];

  __device__ __forceinline__ void load(const DecodeDeviceParams& p, const DecodeTileInfo& t,
                                       int n0) {
    if (p.block_table == nullptr) return;
    const int32_t* table = p.block_table + t.batch * p.block_table_stride;
#pragma unroll
    for (int it = 0; it < T::kLoadIters; ++it) {
      const int key = n0 + (threadIdx.x + it * T::kThreads) / T::kChunks;
      id[it] = key < t.split_hi ? __ldg(table + block_index(p, key)) : 0;  // no entry past the keys
    }
  }
};

// Element offsets of key `key`'s row (head kv_head) in k and in v; blk: its paged block.
struct KvRowOffsets {
  int64_t k, v;
};

__device__ __forceinline__ KvRowOffsets kv_row(const DecodeDeviceParams& p, const DecodeTileInfo& t,
                                               int key, int64_t blk) {
  if (p.block_table != nullptr) {
    const int64_t off = key - block_index(p, key) * p.block_size;
    return {blk * p.k_block_stride + off * p.k_row_stride + t.kv_head * p.k_head_stride,
            blk * p.v_block_stride + off * p.v_row_stride + t.kv_head * p.v_head_stride};
  }
  const int64_t row = t.k_start + key;
  return {row * p.k_row_stride + t.kv_head * p.k_head_stride,
          row * p.v_row_stride + t.kv_head * p.v_head_stride};
}

template <class T>
struct DecodeSmem {
  using Element = typename T::Element;
  unsigned char* base;
  __device__ Element* k(int stage) const {
    return reinterpret_cast<Element*>(base) + stage * T::kBlockN * T::kRowElems;
  }
  __device__ Element* v(int stage) const {
    return reinterpret_cast<Element*>(base) + (T::kStages + stage) * T::kBlockN * T::kRowElems;
  }
  __device__ float* merge() const { return reinterpret_cast<float*>(base); }
  __device__ float* q() const { return reinterpret_cast<float*>(base + T::kQOffset); }
  __device__ float* p(int warp) const {
    return reinterpret_cast<float*>(base + T::kPOffset) + warp * T::kKeysPerWarp * T::kRows;
  }
  __device__ int* row_diag() const { return reinterpret_cast<int*>(base + T::kRowInfoOffset); }
  __device__ float* row_slope() const { return reinterpret_cast<float*>(row_diag() + T::kRows); }
  __device__ float* warp_max() const { return reinterpret_cast<float*>(base + T::kStateOffset); }
  __device__ float* warp_sum() const { return warp_max() + T::kWarps * T::kRows; }
};

// cp.async path: chunk i of this thread's share of a K and a V tile, zero-filled past split_hi.
template <class T>
__device__ __forceinline__ void issue_tile_async(const DecodeDeviceParams& p,
                                                 const DecodeTileInfo& t, const DecodeSmem<T>& sm,
                                                 int stage, int n0, const BlockIds<T>& ids) {
  using Element = typename T::Element;
  const Element* k = static_cast<const Element*>(p.k);
  const Element* v = static_cast<const Element*>(p.v);
#pragma unroll
  for (int it = 0; it < T::kLoadIters; ++it) {
    const int idx = threadIdx.x + it * T::kThreads;
    if (T::kTileChunks % T::kThreads != 0 && idx >= T::kTileChunks) break;
    const int row = idx / T::kChunks;
    const int c = idx - row * T::kChunks;
    const int key = n0 + row;
    const bool valid = key < t.split_hi;
    const KvRowOffsets off = valid ? kv_row(p, t, key, ids.id[it]) : KvRowOffsets{0, 0};
    const int col = c * T::kChunkElems;
    cp_async_16(smem_u32(sm.k(stage) + row * T::kRowElems + col), k + off.k + col, valid ? 16 : 0);
    cp_async_16(smem_u32(sm.v(stage) + row * T::kRowElems + col), v + off.v + col, valid ? 16 : 0);
  }
}

// Register-staged path: this thread's chunks of the next K / V tile.
template <class T>
struct StagedTile {
  uint4 k[T::kLoadIters];
  uint4 v[T::kLoadIters];

  __device__ __forceinline__ void fetch(const DecodeDeviceParams& p, const DecodeTileInfo& t,
                                        int n0, const BlockIds<T>& ids) {
    using Element = typename T::Element;
    const Element* kp = static_cast<const Element*>(p.k);
    const Element* vp = static_cast<const Element*>(p.v);
#pragma unroll
    for (int it = 0; it < T::kLoadIters; ++it) {
      const int idx = threadIdx.x + it * T::kThreads;
      k[it] = v[it] = make_uint4(0, 0, 0, 0);
      if (T::kTileChunks % T::kThreads != 0 && idx >= T::kTileChunks) continue;
      const int row = idx / T::kChunks;
      const int c = idx - row * T::kChunks;
      const int key = n0 + row;
      if (key < t.split_hi) {
        const KvRowOffsets off = kv_row(p, t, key, ids.id[it]);
        k[it] = __ldg(reinterpret_cast<const uint4*>(kp + off.k + c * T::kChunkElems));
        v[it] = __ldg(reinterpret_cast<const uint4*>(vp + off.v + c * T::kChunkElems));
      }
    }
  }

  __device__ __forceinline__ void store(const DecodeSmem<T>& sm, int stage) const {
#pragma unroll
    for (int it = 0; it < T::kLoadIters; ++it) {
      const int idx = threadIdx.x + it * T::kThreads;
      if (T::kTileChunks % T::kThreads != 0 && idx >= T::kTileChunks) continue;
      const int row = idx / T::kChunks;
      const int c = idx - row * T::kChunks;
      const int e = row * T::kRowElems + c * T::kChunkElems;
      *reinterpret_cast<uint4*>(sm.k(stage) + e) = k[it];
      *reinterpret_cast<uint4*>(sm.v(stage) + e) = v[it];
    }
  }
};

}  // namespace fastattn::kernels::cuda::decode
