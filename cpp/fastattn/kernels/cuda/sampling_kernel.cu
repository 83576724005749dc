// sample() on CUDA: one thread block per row, the CPU sampler's decisions (sampling.cc) without
// a sort of the vocabulary.
//
//   1. argmax over the finite logits (lowest id among ties); greedy rows stop here.
//   2. weights w = exp((logit - max) * inv_temperature) as the CPU computes them (float32), 0 for
//      masked tokens. Candidates are the tokens of positive weight.
//   3. top-k / top-p: the last token of the shortest most-likely prefix (logit descending, id
//      ascending) whose count / weight reaches the target, by a radix search over the logits'
//      order-preserving 32-bit keys: each pass splits the key range that holds the crossing into
//      16 bins (per-thread private histograms in shared memory, reduced in a fixed order, so the
//      result is deterministic) and keeps the bin where the running mass crosses; once that bin
//      holds at most kCap tokens they are gathered, sorted (cub::BlockRadixSort) and scanned. A
//      bin of one key value tied over more tokens is resolved in id order by a block scan.
//   4. the draw: u * total over the kept tokens in id order, first token whose running weight
//      exceeds it (tiles of kTile ids, kRun consecutive ones per thread, block scans of double
//      sums).
// All sums are in double as on the CPU; only their order and exp()'s last bits differ.
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>
#include <cub/block/block_radix_sort.cuh>
#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>

#include "fastattn/kernels/cuda/cuda_check.h"
#include "fastattn/kernels/cuda/sampling_launch.h"

namespace fastattn::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kBins = 16;  // bins per radix pass (4 bits of key range)
constexpr int kItems = 4;  // tokens per thread in a gather: kCap of them are sorted
constexpr int kCap = kThreads * kItems;
constexpr int kUnroll = 8;  // loads in flight per thread in the strided passes
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

struct ArgMaxOp {
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

// The kept set of a threshold: tokens ranking no later than (key, id) (kept_by on the CPU).
struct Limit {
  uint32_t key;
  int id;
};
constexpr Limit kNoLimit{0u, INT_MAX};  // every finite logit has a key > 0

__device__ __forceinline__ bool kept_by(uint32_t key, int id, Limit lim) {
  return key > lim.key || (key == lim.key && id <= lim.id);
}

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

struct HistStorage {
  double w[kBins][kThreads];  // per-thread private bins: no atomics, fixed summation order
  int n[kBins][kThreads];
};
struct GatherStorage {
  uint64_t key[kCap];  // (order key << 32) | ~id: larger = more likely
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
  int pass_bin;     // radix_pass: the chosen bin
  double pass_above;
  int counter;      // gather_finish: tokens gathered
  uint32_t res_key; // gather_finish / ties_finish: the threshold found
  int res_id;
};

// One row's state: its logits and the weights' parameters.
struct Row {
  const float* logits;
  int vocab;
  bool aligned16;  // logits can be read as float4
  float max_logit;
  float inv_t;
  // w = exp((l - max) * inv_t), the CPU's float32 operations; 0 for masked tokens.
  __device__ __forceinline__ float weight(float f) const {
    return usable(f) ? expf(__fmul_rn(__fsub_rn(f, max_logit), inv_t)) : 0.0f;
  }
};

// Calls f(i, logit) for the tokens i = threadIdx.x + k * kThreads in increasing order (a fixed
// order per thread, so per-thread sums are deterministic), kUnroll loads in flight: the passes
// read the row from L2 and would otherwise wait on one load at a time.
template <typename F>
__device__ __forceinline__ void for_each_token(const Row& row, F&& f) {
  int i = threadIdx.x;
  for (; i + (kUnroll - 1) * kThreads < row.vocab; i += kUnroll * kThreads) {
    float v[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) v[u] = __ldg(row.logits + i + u * kThreads);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) f(i + u * kThreads, v[u]);
  }
  for (; i < row.vocab; i += kThreads) f(i, __ldg(row.logits + i));
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
    for (int t = 0; t < kRun; ++t) v[t] = i0 + t < row.vocab ? __ldg(row.logits + i0 + t) : -INFINITY;
  }
}

// Block-wide reductions whose result every thread gets (each starts and ends with a barrier,
// so the shared temp storage may be reused by the next call).
__device__ double block_sum(double v, Smem& s) {
  __syncthreads();
  const double r = BlockReduceD(s.small.red_d).Reduce(v, SumOp());
  if (threadIdx.x == 0) s.b_double = r;
  __syncthreads();
  return s.b_double;
}
__device__ int block_min(int v, Smem& s) {
  __syncthreads();
  const int r = BlockReduceI(s.small.red_i).Reduce(v, MinOp());
  if (threadIdx.x == 0) s.b_int = r;
  __syncthreads();
  return s.b_int;
}
__device__ int block_sum_int(int v, Smem& s) {
  __syncthreads();
  const int r = BlockReduceI(s.small.red_i).Reduce(v, SumOp());
  if (threadIdx.x == 0) s.b_int = r;
  __syncthreads();
  return s.b_int;
}
__device__ int block_max(int v, Smem& s) {
  __syncthreads();
  const int r = BlockReduceI(s.small.red_i).Reduce(v, MaxOp());
  if (threadIdx.x == 0) s.b_int = r;
  __syncthreads();
  return s.b_int;
}
__device__ uint32_t block_min_key(uint32_t v, Smem& s) {
  __syncthreads();
  const uint32_t r = BlockReduceU(s.small.red_u).Reduce(v, MinOp());
  if (threadIdx.x == 0) s.b_key = r;
  __syncthreads();
  return s.b_key;
}
__device__ ArgMax block_argmax(ArgMax v, Smem& s) {
  __syncthreads();
  const ArgMax r = BlockReduceArg(s.small.red_arg).Reduce(v, ArgMaxOp());
  if (threadIdx.x == 0) s.b_arg = r;
  __syncthreads();
  return s.b_arg;
}

// A selection in progress: candidates (usable, weight > 0, kept by `lim`) with keys in
// [lo, hi], `count` of them; `above` is the mass (count or weight) of the candidates above hi.
struct Search {
  Limit lim;
  uint32_t lo, hi;
  int count;
  double above;
};

// One radix pass: splits [lo, hi] into kBins bins and narrows the search to the bin where the
// running mass (from the most likely end) reaches target.
__device__ void radix_pass(const Row& row, Search& q, bool unit, double target, Smem& s) {
  const int shift = max(0, 32 - __clz(static_cast<int>(q.hi - q.lo)) - 4);
  const int tid = threadIdx.x;
  __syncthreads();  // the previous user of s.big is done
#pragma unroll
  for (int b = 0; b < kBins; ++b) {
    s.big.hist.w[b][tid] = 0.0;
    s.big.hist.n[b][tid] = 0;
  }
  for_each_token(row, [&](int i, float f) {
    if (!usable(f)) return;
    const uint32_t key = order_key(f);
    if (key < q.lo || key > q.hi || !kept_by(key, i, q.lim)) return;
    const float w = row.weight(f);
    if (!(w > 0.0f)) return;
    const int b = static_cast<int>((key - q.lo) >> shift);
    s.big.hist.w[b][tid] += unit ? 1.0 : static_cast<double>(w);
    s.big.hist.n[b][tid] += 1;
  });
  __syncthreads();
  {  // bin = tid / 16 summed by its 16 threads (columns part, part + 16, ...), then across them
    const int bin = tid >> 4, part = tid & 15;
    double w = 0.0;
    int n = 0;
    for (int c = part; c < kThreads; c += 16) {
      w += s.big.hist.w[bin][c];
      n += s.big.hist.n[bin][c];
    }
#pragma unroll
    for (int off = 8; off > 0; off >>= 1) {
      w += __shfl_xor_sync(0xffffffffu, w, off);
      n += __shfl_xor_sync(0xffffffffu, n, off);
    }
    if (part == 0) {
      s.bin_w[bin] = w;
      s.bin_n[bin] = n;
    }
  }
  __syncthreads();
  if (tid == 0) {
    // From the most likely bin down: the first where the running mass reaches the target. If
    // rounding leaves it unreached, the least likely non-empty bin (its least likely token is
    // the CPU's answer then).
    double acc = q.above, acc_lowest = q.above;
    int chosen = -1, lowest = -1;
    for (int b = kBins - 1; b >= 0; --b) {
      if (s.bin_n[b] == 0) continue;
      if (acc + s.bin_w[b] >= target) {
        chosen = b;
        break;
      }
      lowest = b;
      acc_lowest = acc;
      acc += s.bin_w[b];
    }
    if (chosen < 0) {
      chosen = lowest;
      acc = acc_lowest;
    }
    s.pass_bin = chosen < 0 ? 0 : chosen;  // (no candidate at all cannot happen: count > kCap)
    s.pass_above = acc;
  }
  __syncthreads();
  const int b = s.pass_bin;
  q.above = s.pass_above;
  const uint64_t lo = static_cast<uint64_t>(q.lo) + (static_cast<uint64_t>(b) << shift);
  const uint64_t hi = lo + (uint64_t{1} << shift) - 1;
  q.lo = static_cast<uint32_t>(lo);
  q.hi = hi < q.hi ? static_cast<uint32_t>(hi) : q.hi;
  q.count = s.bin_n[b];
}

// Finishes a search of at most kCap candidates: gathers them, sorts them most likely first and
// returns the first whose running mass reaches target (the last one if rounding leaves it
// unreached).
__device__ Limit gather_finish(const Row& row, const Search& q, bool unit, double target, Smem& s) {
  const int tid = threadIdx.x;
  __syncthreads();
  if (tid == 0) s.counter = 0;
  __syncthreads();
  for_each_token(row, [&](int i, float f) {
    if (!usable(f)) return;
    const uint32_t key = order_key(f);
    if (key < q.lo || key > q.hi || !kept_by(key, i, q.lim)) return;
    const float w = row.weight(f);
    if (!(w > 0.0f)) return;
    const int at = atomicAdd(&s.counter, 1);
    if (at < kCap) {
      s.big.gather.key[at] = (static_cast<uint64_t>(key) << 32) | static_cast<uint32_t>(~i);
      s.big.gather.w[at] = unit ? 1.0f : w;
    }
  });
  __syncthreads();
  const int n = min(s.counter, kCap);
  if (n == 0) return q.lim;  // (cannot happen: the search always holds a candidate)
  uint64_t keys[kItems];
  float ws[kItems];
#pragma unroll
  for (int j = 0; j < kItems; ++j) {
    const int at = tid * kItems + j;
    keys[j] = at < n ? s.big.gather.key[at] : 0;
    ws[j] = at < n ? s.big.gather.w[at] : 0.0f;
  }
  __syncthreads();
  // Distinct keys (ids differ), so the order is unique whatever the gather's order was.
  BlockSort(s.big.gather.sort).SortDescending(keys, ws);
  double mine = 0.0;
#pragma unroll
  for (int j = 0; j < kItems; ++j) mine += static_cast<double>(ws[j]);  // padding weighs 0
  double before = 0.0;
  __syncthreads();
  BlockScanD(s.small.scan_d).ExclusiveSum(mine, before);
  double cum = q.above + before;
  int first = INT_MAX;
#pragma unroll
  for (int j = 0; j < kItems; ++j) {
    const int rank = tid * kItems + j;
    if (rank < n && first == INT_MAX) {
      cum += static_cast<double>(ws[j]);
      if (cum >= target) first = rank;
    }
  }
  int r = block_min(first, s);
  if (r == INT_MAX) r = n - 1;
  if (r / kItems == tid) {
    uint64_t k = 0;
#pragma unroll
    for (int j = 0; j < kItems; ++j)
      if (j == r % kItems) k = keys[j];  // (a constant index keeps keys[] in registers)
    s.res_key = static_cast<uint32_t>(k >> 32);
    s.res_id = static_cast<int>(~static_cast<uint32_t>(k));
  }
  __syncthreads();
  return Limit{s.res_key, s.res_id};
}

// Finishes a search whose candidates all share one key (more than kCap of them): they tie and
// rank by id, each of the same weight; the crossing is the j-th of them in id order.
__device__ Limit ties_finish(const Row& row, const Search& q, bool unit, double target, Smem& s) {
  const uint32_t key = q.lo;
  const double w = unit ? 1.0 : static_cast<double>(row.weight(key_value(key)));
  // The smallest j in [1, count] with above + j * w >= target (count if none).
  int j = static_cast<int>(fmin(fmax(ceil((target - q.above) / w), 1.0), static_cast<double>(q.count)));
  while (j > 1 && q.above + (j - 1) * w >= target) --j;
  while (j < q.count && q.above + j * w < target) ++j;
  const int tid = threadIdx.x;
  if (tid == 0) s.res_id = INT_MAX;  // read only after the loop's barriers
  int seen = 0;  // tied candidates in the tiles before this one
  for (int base = 0; base < row.vocab; base += kTile) {
    const int i0 = base + tid * kRun;
    float v[kRun];
    load_run(row, i0, v);
    int mine = 0;
#pragma unroll
    for (int t = 0; t < kRun; ++t)
      mine += (usable(v[t]) && order_key(v[t]) == key && kept_by(key, i0 + t, q.lim)) ? 1 : 0;
    int before = 0, tile = 0;
    __syncthreads();
    BlockScanI(s.small.scan_i).ExclusiveSum(mine, before, tile);
    if (seen + before < j && j <= seen + before + mine) {
      int c = seen + before;
      for (int t = 0; t < kRun; ++t) {
        if (usable(v[t]) && order_key(v[t]) == key && kept_by(key, i0 + t, q.lim) && ++c == j) {
          s.res_id = i0 + t;
          break;
        }
      }
    }
    seen += tile;
    if (seen >= j) break;
  }
  __syncthreads();
  return Limit{key, s.res_id};  // (INT_MAX, all ties kept, only if the scan missed: it cannot)
}

// The threshold of the shortest most-likely prefix of the search's candidates whose mass
// reaches target (select_prefix on the CPU).
__device__ Limit select_prefix(const Row& row, Search q, bool unit, double target, Smem& s) {
  for (;;) {
    if (q.count <= kCap) return gather_finish(row, q, unit, target, s);
    if (q.lo == q.hi) return ties_finish(row, q, unit, target, s);
    radix_pass(row, q, unit, target, s);
  }
}

// Sum of the kept weights, and the count and smallest key of the kept candidates.
struct Mass {
  double weight;
  int count;
  uint32_t min_key;
};
__device__ Mass kept_mass(const Row& row, Limit lim, Smem& s) {
  double w_sum = 0.0;
  int n = 0;
  uint32_t lo = 0xffffffffu;
  for_each_token(row, [&](int i, float f) {
    if (!usable(f)) return;
    const uint32_t key = order_key(f);
    if (!kept_by(key, i, lim)) return;
    const float w = row.weight(f);
    if (!(w > 0.0f)) return;
    w_sum += static_cast<double>(w);
    ++n;
    lo = min(lo, key);
  });
  Mass m;
  m.weight = block_sum(w_sum, s);
  m.count = block_sum_int(n, s);
  m.min_key = block_min_key(lo, s);
  return m;
}

// The draw: walks the kept tokens in id order and returns the first whose running weight
// exceeds u * total (the last kept one if rounding runs the mass out first).
__device__ int draw(const Row& row, Limit lim, float u, int fallback, Smem& s) {
  const int tid = threadIdx.x;
  double total_mine = 0.0;
  int last_mine = -1;
  for_each_token(row, [&](int i, float f) {
    if (!usable(f) || !kept_by(order_key(f), i, lim)) return;
    const float w = row.weight(f);
    if (!(w > 0.0f)) return;
    total_mine += static_cast<double>(w);
    last_mine = i;
  });
  const double total = block_sum(total_mine, s);
  const int last_kept = block_max(last_mine, s);
  const double target = static_cast<double>(u) * total;
  double seen = 0.0;
  for (int base = 0; base < row.vocab; base += kTile) {
    const int i0 = base + tid * kRun;
    float w[kRun];
    load_run(row, i0, w);
    double mine = 0.0;
#pragma unroll
    for (int t = 0; t < kRun; ++t) {
      const float f = w[t];
      float wt = 0.0f;
      if (usable(f) && kept_by(order_key(f), i0 + t, lim)) wt = row.weight(f);
      w[t] = wt > 0.0f ? wt : 0.0f;
      mine += static_cast<double>(w[t]);
    }
    double before = 0.0, tile = 0.0;
    __syncthreads();
    BlockScanD(s.small.scan_d).ExclusiveSum(mine, before, tile);
    double cum = seen + before;
    int found = INT_MAX;
#pragma unroll
    for (int t = 0; t < kRun; ++t) {
      if (w[t] == 0.0f || found != INT_MAX) continue;
      cum += static_cast<double>(w[t]);
      if (target < cum) found = i0 + t;
    }
    found = block_min(found, s);
    if (found != INT_MAX) return found;
    seen += tile;
  }
  return last_kept >= 0 ? last_kept : fallback;
}

__global__ void __launch_bounds__(kThreads) sample_kernel(const SampleLaunch p) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  Smem& s = *reinterpret_cast<Smem*>(smem_raw);
  const SampleRow prm = p.row[blockIdx.x];
  Row row;
  row.logits = p.logits + static_cast<int64_t>(blockIdx.x) * p.ld;
  row.vocab = p.vocab;
  row.aligned16 = (reinterpret_cast<uintptr_t>(row.logits) & 15u) == 0;
  row.inv_t = prm.inv_temperature;

  // 1. argmax over usable logits, lowest id among equal maxima (each thread scans ids upwards).
  ArgMax best{-INFINITY, INT_MAX};
  for_each_token(row, [&](int i, float f) {
    if (usable(f) && (best.id == INT_MAX || f > best.value)) best = ArgMax{f, i};
  });
  best = block_argmax(best, s);
  if (best.id == INT_MAX || prm.top_k == 1) {  // no usable logit: token 0; greedy: argmax
    if (threadIdx.x == 0) p.out[blockIdx.x] = best.id == INT_MAX ? 0 : best.id;
    return;
  }
  row.max_logit = best.value;

  // 2-3. top-k, then top-p over what top-k kept.
  Limit lim = kNoLimit;
  Mass m{0.0, 0, 0u};
  if (prm.top_k > 0 || prm.top_p < 1.0f) m = kept_mass(row, lim, s);
  if (prm.top_k > 0 && prm.top_k < m.count) {
    const Search q{kNoLimit, m.min_key, order_key(best.value), m.count, 0.0};
    lim = select_prefix(row, q, true, static_cast<double>(prm.top_k), s);
    if (prm.top_p < 1.0f) m = kept_mass(row, lim, s);
  }
  if (prm.top_p < 1.0f) {
    const Search q{lim, m.min_key, order_key(best.value), m.count, 0.0};
    lim = select_prefix(row, q, false, static_cast<double>(prm.top_p) * m.weight, s);
  }

  // 4. the draw.
  const int token = draw(row, lim, prm.u, best.id, s);
  if (threadIdx.x == 0) p.out[blockIdx.x] = token;
}

}  // namespace

void launch_sample(const SampleLaunch& p, cudaStream_t stream) {
  if (p.rows == 0) return;
  const int smem = static_cast<int>(sizeof(Smem));
  FA_CUDA_CHECK(cudaFuncSetAttribute(sample_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  sample_kernel<<<p.rows, kThreads, smem, stream>>>(p);
  FA_CUDA_CHECK_LAUNCH("sample_kernel");
}

}  // namespace fastattn::kernels::cuda
