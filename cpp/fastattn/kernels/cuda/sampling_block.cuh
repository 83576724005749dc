// Block-level pieces of the CUDA sampler (sampling_kernel.cu): one thread block of kThreads
// threads per row. The row's logits are read from global memory (L2 after the first pass) in
// 16-byte vectors with several loads in flight per thread: a pass is latency bound otherwise.
// Every reduction has a fixed order, so a row's result is deterministic.
#pragma once

#include <cuda_runtime.h>

#include <climits>
#include <cstdint>
#include <cub/block/block_radix_sort.cuh>
#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>

namespace fastattn::kernels::cuda::sampling {

constexpr int kThreads = 256;
constexpr int kBins = 16;  // bins per radix pass (4 bits of key range)
constexpr int kItems = 4;  // tokens per thread in a gather: kCap of them are sorted
constexpr int kCap = kThreads * kItems;
constexpr int kUnroll = 8;  // float4 loads in flight per thread in the strided passes
constexpr int kRun = 16;    // consecutive tokens per thread in the id-order tiles
constexpr int kTile = kThreads * kRun;

using BlockSort = cub::BlockRadixSort<uint64_t, kThreads, kItems, float>;
using BlockScanD = cub::BlockScan<double, kThreads>;
using BlockScanI = cub::BlockScan<int, kThreads>;
using BlockReduceD = cub::BlockReduce<double, kThreads>;
using BlockReduceI = cub::BlockReduce<int, kThreads>;
using BlockReduceU = cub::BlockReduce<uint32_t, kThreads>;

struct ArgMax {
  float value;
  int id;
};
struct ArgMaxOp {  // larger value, then lower id
  __device__ ArgMax operator()(const ArgMax& a, const ArgMax& b) const {
    return (a.value > b.value || (a.value == b.value && a.id < b.id)) ? a : b;
  }
};
using BlockReduceArg = cub::BlockReduce<ArgMax, kThreads>;

struct MinOp {
  template <typename T>
  __device__ T operator()(const T& a, const T& b) const {
    return b < a ? b : a;
  }
};
struct MaxOp {
  template <typename T>
  __device__ T operator()(const T& a, const T& b) const {
    return a < b ? b : a;
  }
};
struct SumOp {
  template <typename T>
  __device__ T operator()(const T& a, const T& b) const {
    return a + b;
  }
};

// Order-preserving key: a < b as floats <=> key(a) < key(b); -0 and +0 share the key of 0
// (they compare equal, so they tie and rank by id, as on the CPU).
__device__ __forceinline__ uint32_t order_key(float f) {
  const uint32_t u = f == 0.0f ? 0u : __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ float key_value(uint32_t key) {
  return __uint_as_float((key & 0x80000000u) ? (key & 0x7fffffffu) : ~key);
}

// NaN and +inf are masked like -inf on the GPU (the host cannot see values to reject them).
__device__ __forceinline__ bool usable(float f) { return fabsf(f) < INFINITY; }

// The kept set of a threshold: tokens ranking no later than (key, id) (kept_by on the CPU).
struct Limit {
  uint32_t key;
  int id;
};
constexpr Limit kNoLimit{0u, INT_MAX};  // every finite logit has a key > 0

__device__ __forceinline__ bool kept_by(uint32_t key, int id, Limit lim) {
  return key > lim.key || (key == lim.key && id <= lim.id);
}

struct HistStorage {
  double w[kBins][kThreads];  // per-thread private bins: no atomics, fixed summation order
  int n[kBins][kThreads];
};
struct GatherStorage {
  uint64_t key[kCap];
  float w[kCap];
  typename BlockSort::TempStorage sort;
};

struct Smem {
  union {
    HistStorage hist;
    GatherStorage gather;
  } big;
  union {
    typename BlockScanD::TempStorage scan_d;
    typename BlockScanI::TempStorage scan_i;
    typename BlockReduceD::TempStorage red_d;
    typename BlockReduceI::TempStorage red_i;
    typename BlockReduceU::TempStorage red_u;
    typename BlockReduceArg::TempStorage red_arg;
  } small;
  double bin_w[kBins];
  int bin_n[kBins];
  // Values one thread writes and every thread reads after a barrier; each has one purpose, so
  // a write never races with the reads of another step.
  double b_double;  // block_sum
  int b_int;        // block_min / block_max / block_sum_int
  uint32_t b_key;   // block_min_key
  ArgMax b_arg;     // block_argmax
  int pass_bin;     // choose_bin
  double pass_above;
  int counter;       // gathers: tokens gathered
  uint32_t res_key;  // finishes: the threshold found
  int res_id;
};

// One row: its logits and the weights' parameters.
struct Row {
  const float* logits;
  int vocab;
  int head;  // tokens before the first 16-byte boundary (read one by one)
  bool aligned16;
  float max_logit;
  float inv_t;
  // w = exp((l - max) * inv_t) with the CPU's float32 operations; 0 for masked tokens.
  __device__ __forceinline__ float weight(float f) const {
    return usable(f) ? expf(__fmul_rn(__fsub_rn(f, max_logit), inv_t)) : 0.0f;
  }
};

__device__ __forceinline__ Row make_row(const float* logits, int vocab, float inv_t) {
  Row r;
  r.logits = logits;
  r.vocab = vocab;
  const unsigned misalign = static_cast<unsigned>(reinterpret_cast<uintptr_t>(logits) >> 2) & 3u;
  r.head = min(static_cast<int>((4u - misalign) & 3u), vocab);
  r.aligned16 = misalign == 0;
  r.max_logit = 0.0f;
  r.inv_t = inv_t;
  return r;
}

// Calls f(i, logit) for this thread's share of the tokens, in increasing i (a fixed order per
// thread, so per-thread sums are deterministic): the unaligned head one by one, then float4
// vectors i = head + 4 * (threadIdx.x + k * kThreads), kUnroll of them in flight, then the tail.
template <typename F>
__device__ __forceinline__ void for_each_token(const Row& row, F&& f) {
  const int tid = threadIdx.x;
  if (tid < row.head) f(tid, __ldg(row.logits + tid));
  const float4* body = reinterpret_cast<const float4*>(row.logits + row.head);
  const int n4 = (row.vocab - row.head) >> 2;
  int j = tid;
  for (; j + (kUnroll - 1) * kThreads < n4; j += kUnroll * kThreads) {
    float4 v[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) v[u] = __ldg(body + j + u * kThreads);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int i = row.head + 4 * (j + u * kThreads);
      f(i, v[u].x);
      f(i + 1, v[u].y);
      f(i + 2, v[u].z);
      f(i + 3, v[u].w);
    }
  }
  for (; j < n4; j += kThreads) {
    const float4 v = __ldg(body + j);
    const int i = row.head + 4 * j;
    f(i, v.x);
    f(i + 1, v.y);
    f(i + 2, v.z);
    f(i + 3, v.w);
  }
  const int tail = row.head + 4 * n4 + tid;
  if (tail < row.vocab) f(tail, __ldg(row.logits + tail));
}

// v[t] = logit of token i0 + t (t < kRun; -inf past the vocabulary): this thread's run of an
// id-order tile. i0 is a multiple of kRun.
__device__ __forceinline__ void load_run(const Row& row, int i0, float (&v)[kRun]) {
  if (row.aligned16 && i0 + kRun <= row.vocab) {
    const float4* p = reinterpret_cast<const float4*>(row.logits + i0);
#pragma unroll
    for (int t = 0; t < kRun / 4; ++t) {
      const float4 x = __ldg(p + t);
      v[4 * t] = x.x;
      v[4 * t + 1] = x.y;
      v[4 * t + 2] = x.z;
      v[4 * t + 3] = x.w;
    }
  } else {
#pragma unroll
    for (int t = 0; t < kRun; ++t)
      v[t] = i0 + t < row.vocab ? __ldg(row.logits + i0 + t) : -INFINITY;
  }
}

// Block-wide reductions whose result every thread gets (each starts and ends with a barrier,
// so the shared temp storage may be reused by the next call): Reduce's temp storage does the
// reduction, thread 0 leaves the result in `slot` for the others.
template <class Reduce, class T, class Op>
__device__ __forceinline__ T block_reduce(T v, typename Reduce::TempStorage& temp, T& slot, Op op) {
  __syncthreads();
  const T r = Reduce(temp).Reduce(v, op);
  if (threadIdx.x == 0) slot = r;
  __syncthreads();
  return slot;
}
__device__ __forceinline__ double block_sum(double v, Smem& s) {
  return block_reduce<BlockReduceD>(v, s.small.red_d, s.b_double, SumOp());
}
__device__ __forceinline__ int block_sum_int(int v, Smem& s) {
  return block_reduce<BlockReduceI>(v, s.small.red_i, s.b_int, SumOp());
}
__device__ __forceinline__ int block_min(int v, Smem& s) {
  return block_reduce<BlockReduceI>(v, s.small.red_i, s.b_int, MinOp());
}
__device__ __forceinline__ int block_max(int v, Smem& s) {
  return block_reduce<BlockReduceI>(v, s.small.red_i, s.b_int, MaxOp());
}
__device__ __forceinline__ uint32_t block_min_key(uint32_t v, Smem& s) {
  return block_reduce<BlockReduceU>(v, s.small.red_u, s.b_key, MinOp());
}
__device__ __forceinline__ ArgMax block_argmax(ArgMax v, Smem& s) {
  return block_reduce<BlockReduceArg>(v, s.small.red_arg, s.b_arg, ArgMaxOp());
}

}  // namespace fastattn::kernels::cuda::sampling
