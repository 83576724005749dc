// The CUDA kernel behind apply_rope, kv_cache_write and rope_kv_cache_write: one thread block
// per (token, group of head rows). A block holding rotated rows first computes the token's cos /
// sin into shared memory exactly as the CPU does (float32 angle = float32(position) * inv_freq,
// cos / sin of it in double, rounded to float32), then every row element is read into float32,
// rotated, and written back rounded once to its dtype. A rotated K written to the cache is the
// value stored in k (rounded to k's dtype) converted to the cache's dtype, so the fused kernel
// equals apply_rope followed by kv_cache_write bit for bit.
#include <cuda_runtime.h>

#include "fastattn/core/cuda/cuda_check.h"
#include "fastattn/core/cuda/dtype_vec.cuh"
#include "fastattn/kernels/cuda/rope_kv_launch.h"

namespace fastattn::kernels::cuda {
namespace {

// Element offset of head h of token t in a TokenRows view.
__device__ __forceinline__ int64_t row_offset(const TokenRows& x, int64_t t, int h) {
  return t * x.token_stride + static_cast<int64_t>(h) * x.head_stride;
}

__device__ __forceinline__ int64_t cache_offset(const CacheRows& c, int64_t block,
                                                int64_t slot_in_block, int h) {
  return block * c.block_stride + slot_in_block * c.slot_stride +
         static_cast<int64_t>(h) * c.head_stride;
}

// Copies one head row of `src` into the cache (dtype converted on the way).
__device__ __forceinline__ void copy_row_to_cache(const TokenRows& src, int64_t t, int h,
                                                  const CacheRows& c, int64_t block,
                                                  int64_t in_block) {
  const int64_t s0 = row_offset(src, t, h);
  const int64_t c0 = cache_offset(c, block, in_block, h);
  for (int d = threadIdx.x; d < src.dim; d += blockDim.x)
    store_elem_any(c.data, c.dtype, c0 + d, load_elem_any(src.data, src.dtype, s0 + d));
}

__global__ void __launch_bounds__(kRopeKvThreads) rope_kv_kernel(const RopeKvLaunch p) {
  __shared__ float cos_s[kRopeMaxPairs];
  __shared__ float sin_s[kRopeMaxPairs];
  const int64_t t = blockIdx.x;
  // The rows of a token, in order: rotated[0]'s heads, rotated[1]'s, then (cache write) the
  // heads of k_src when K is not the rotated tensor, then v_src's.
  const int n0 = p.num_rotated > 0 ? p.rotated[0].heads : 0;
  const int n_rot = n0 + (p.num_rotated > 1 ? p.rotated[1].heads : 0);
  const int n_k = p.write_cache && !p.k_from_rotated ? p.k_src.heads : 0;
  const int n_v = p.write_cache ? p.v_src.heads : 0;
  const int row_begin = static_cast<int>(blockIdx.y) * p.rows_per_block;
  const int row_end = min(row_begin + p.rows_per_block, n_rot + n_k + n_v);

  if (row_begin < n_rot) {  // block-uniform: this block rotates, so it needs cos / sin
    const int64_t pos = p.positions_int64 ? static_cast<const int64_t*>(p.positions)[t]
                                          : static_cast<const int32_t*>(p.positions)[t];
    const float position = static_cast<float>(pos);  // position_ids.float()
    for (int i = threadIdx.x; i < p.pairs; i += blockDim.x) {
      const float angle = __fmul_rn(position, p.inv_freq[i]);  // float32 product, as the CPU
      double s, c;
      sincos(static_cast<double>(angle), &s, &c);
      cos_s[i] = static_cast<float>(c);
      sin_s[i] = static_cast<float>(s);
    }
    __syncthreads();
  }

  int64_t block = 0, in_block = 0;
  bool cache_ok = false;
  if (p.write_cache) {
    const int64_t slot = p.slots[t];
    cache_ok = slot >= 0 && slot < p.num_slots;  // out-of-range slots are skipped like -1
    if (cache_ok) {
      block = slot / p.block_size;
      in_block = slot % p.block_size;
    }
  }

  for (int r = row_begin; r < row_end; ++r) {
    if (r < n_rot) {
      const bool second = r >= n0;
      const TokenRows x = second ? p.rotated[1] : p.rotated[0];
      const int h = second ? r - n0 : r;
      const bool to_cache = second && p.k_from_rotated && cache_ok;
      const int64_t x0 = row_offset(x, t, h);
      const int64_t c0 = to_cache ? cache_offset(p.k_cache, block, in_block, h) : 0;
      // Items: the rotary pairs, then (cache write) the dims past rotary_dim, copied as they are.
      const int pairs = p.pairs;
      const int items = pairs + (to_cache ? x.dim - 2 * pairs : 0);
      for (int j = threadIdx.x; j < items; j += blockDim.x) {
        if (j < pairs) {
          const int i0 = p.neox ? j : 2 * j;
          const int i1 = p.neox ? j + pairs : 2 * j + 1;
          const float a = load_elem_any(x.data, x.dtype, x0 + i0);
          const float b = load_elem_any(x.data, x.dtype, x0 + i1);
          const float c = cos_s[j], s = sin_s[j];
          const float ra = a * c - b * s;
          const float rb = b * c + a * s;
          store_elem_any(x.data, x.dtype, x0 + i0, ra);
          store_elem_any(x.data, x.dtype, x0 + i1, rb);
          if (to_cache) {
            store_elem_any(p.k_cache.data, p.k_cache.dtype, c0 + i0, round_to_dtype(x.dtype, ra));
            store_elem_any(p.k_cache.data, p.k_cache.dtype, c0 + i1, round_to_dtype(x.dtype, rb));
          }
        } else {
          const int d = 2 * pairs + (j - pairs);
          store_elem_any(p.k_cache.data, p.k_cache.dtype, c0 + d,
                         load_elem_any(x.data, x.dtype, x0 + d));
        }
      }
    } else if (!cache_ok) {
      continue;  // a copy row of a token whose slot is skipped
    } else if (r < n_rot + n_k) {
      copy_row_to_cache(p.k_src, t, r - n_rot, p.k_cache, block, in_block);
    } else {
      copy_row_to_cache(p.v_src, t, r - n_rot - n_k, p.v_cache, block, in_block);
    }
  }
}

}  // namespace

void launch_rope_kv(const RopeKvLaunch& p, cudaStream_t stream) {
  const int n_rot =
      (p.num_rotated > 0 ? p.rotated[0].heads : 0) + (p.num_rotated > 1 ? p.rotated[1].heads : 0);
  const int n_k = p.write_cache && !p.k_from_rotated ? p.k_src.heads : 0;
  const int n_v = p.write_cache ? p.v_src.heads : 0;
  const int rows = n_rot + n_k + n_v;
  if (p.tokens == 0 || rows == 0) return;
  const dim3 grid(static_cast<unsigned>(p.tokens),
                  static_cast<unsigned>((rows + p.rows_per_block - 1) / p.rows_per_block));
  rope_kv_kernel<<<grid, kRopeKvThreads, 0, stream>>>(p);
  FA_CUDA_CHECK_LAUNCH("rope_kv_kernel");
}

}  // namespace fastattn::kernels::cuda
