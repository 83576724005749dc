// sample() on CUDA: one thread block per row, the CPU sampler's decisions (sampling.cc) without
// a sort of the vocabulary.
//
//   1. argmax over the finite logits (lowest id among ties); greedy rows stop here.
//   2. weights w = exp((logit - max) * inv_temperature) as the CPU computes them (float32), 0 for
//      masked tokens. Candidates are the tokens of positive weight.
//   3. top-k / top-p: the last token of the shortest most-likely prefix (logit descending, id
//      ascending) whose count / weight reaches the target, by a radix search over the logits'
//      order-preserving 32-bit keys: each pass splits the key range that holds the crossing into
//      16 bins (per-thread private histograms in shared memory, reduced in a fixed order) and
//      keeps the bin where the running mass crosses. Once the whole prefix down to that bin holds
//      at most kCap tokens, it is gathered and sorted (cub::BlockRadixSort): top-k, top-p and the
//      draw then finish on that list without another pass over the vocabulary. Otherwise, once
//      the bin alone holds at most kCap tokens, the bin is gathered for the threshold; a bin of
//      one key tied over more tokens is resolved in id order by block scans.
//   4. the draw: u * total over the kept tokens in id order, the first token whose running
//      weight exceeds it (on the sorted list re-sorted by id, or by tiles of kTile ids).
// All sums are in double as on the CPU, each in a fixed order (deterministic results); only their
// order and exp()'s last bits differ from the CPU's.
#include <algorithm>
#include <mutex>
#include <vector>

#include "fastattn/core/cuda/cuda_check.h"
#include "fastattn/kernels/cuda/sampling_block.cuh"
#include "fastattn/kernels/cuda/sampling_launch.h"

namespace fastattn::kernels::cuda {
namespace sampling {
namespace {

// A selection in progress: candidates (usable, weight > 0, kept by `lim`) with keys in
// [lo, hi], `count` of them; `above` / `above_n` are the mass / number of candidates above hi.
struct Search {
  Limit lim;
  uint32_t lo, hi;
  int count;
  int above_n;
  double above;
};

// Histogram of the search's candidates over kBins bins of [lo, hi] into s.bin_w / s.bin_n
// (weights and counts). Returns the bin shift.
__device__ int histogram(const Row& row, const Search& q, Smem& s) {
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
    s.big.hist.w[b][tid] += static_cast<double>(w);
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
  return shift;
}

// Narrows q to the bin of the last histogram where the running mass (count when unit) from
// the most likely end reaches target. If rounding leaves it unreached: the least likely
// non-empty bin (whose least likely token is then the CPU's answer too).
__device__ void choose_bin(Search& q, int shift, bool unit, double target, Smem& s) {
  if (threadIdx.x == 0) {
    double acc = q.above, acc_lowest = q.above;
    int chosen = -1, lowest = 0;
    for (int b = kBins - 1; b >= 0; --b) {
      if (s.bin_n[b] == 0) continue;
      const double mass = unit ? static_cast<double>(s.bin_n[b]) : s.bin_w[b];
      if (acc + mass >= target) {
        chosen = b;
        break;
      }
      lowest = b;
      acc_lowest = acc;
      acc += mass;
    }
    if (chosen < 0) {
      chosen = lowest;
      acc = acc_lowest;
    }
    s.pass_bin = chosen;
    s.pass_above = acc;
  }
  __syncthreads();
  const int b = s.pass_bin;
  int above_n = 0;
  for (int c = kBins - 1; c > b; --c) above_n += s.bin_n[c];
  q.above_n += above_n;
  q.above = s.pass_above;
  const uint64_t lo = static_cast<uint64_t>(q.lo) + (static_cast<uint64_t>(b) << shift);
  const uint64_t hi = lo + (uint64_t{1} << shift) - 1;
  q.lo = static_cast<uint32_t>(lo);
  q.hi = hi < q.hi ? static_cast<uint32_t>(hi) : q.hi;
  q.count = s.bin_n[b];
}

__device__ __forceinline__ int bit_length(uint32_t v) { return 32 - __clz(static_cast<int>(v)); }

// Up to kCap candidates sorted most likely first; thread t holds ranks kItems * t + j.
// Composite keys: ((key - lo) << id_bits | (id_mask - id)) + 1 (0 = padding).
struct List {
  uint64_t key[kItems];
  float w[kItems];  // the token's weight (0 for padding)
  int n;
  uint32_t lo;
  int id_bits;
  __device__ __forceinline__ uint32_t id_mask() const { return (1u << id_bits) - 1u; }
};

// Gathers the candidates (kept by lim, weight > 0) with keys in [lo, hi] and sorts them.
__device__ void gather_sorted(const Row& row, uint32_t lo, uint32_t hi, Limit lim, List& L,
                              Smem& s) {
  const int tid = threadIdx.x;
  L.lo = lo;
  L.id_bits = max(1, bit_length(static_cast<uint32_t>(row.vocab - 1)));
  const uint32_t id_mask = L.id_mask();
  __syncthreads();
  if (tid == 0) s.counter = 0;
  __syncthreads();
  for_each_token(row, [&](int i, float f) {
    if (!usable(f)) return;
    const uint32_t key = order_key(f);
    if (key < lo || key > hi || !kept_by(key, i, lim)) return;
    const float w = row.weight(f);
    if (!(w > 0.0f)) return;
    const int at = atomicAdd(&s.counter, 1);
    if (at < kCap) {
      s.big.gather.key[at] =
          ((static_cast<uint64_t>(key - lo) << L.id_bits) | (id_mask - static_cast<uint32_t>(i))) +
          1;
      s.big.gather.w[at] = w;
    }
  });
  __syncthreads();
  L.n = min(s.counter, kCap);
#pragma unroll
  for (int j = 0; j < kItems; ++j) {
    const int at = tid * kItems + j;
    L.key[j] = at < L.n ? s.big.gather.key[at] : 0;
    L.w[j] = at < L.n ? s.big.gather.w[at] : 0.0f;
  }
  __syncthreads();
  // Keys are distinct (ids differ): the order is unique whatever order the gather had.
  const int end_bit = L.id_bits + bit_length(hi - lo) + 1;
  BlockSort(s.big.gather.sort).SortDescending(L.key, L.w, 0, end_bit);
}

// The first rank r < limit_n of the list whose running mass base + sum(ranks <= r) reaches
// target (counts when unit, else weights); limit_n - 1 if rounding leaves it unreached.
__device__ int list_crossing(const List& L, int limit_n, bool unit, double base, double target,
                             Smem& s) {
  const int tid = threadIdx.x;
  double mine = 0.0;
#pragma unroll
  for (int j = 0; j < kItems; ++j)
    if (tid * kItems + j < limit_n) mine += unit ? 1.0 : static_cast<double>(L.w[j]);
  double before = 0.0;
  __syncthreads();
  BlockScanD(s.small.scan_d).ExclusiveSum(mine, before);
  double cum = base + before;
  int first = INT_MAX;
#pragma unroll
  for (int j = 0; j < kItems; ++j) {
    const int rank = tid * kItems + j;
    if (rank < limit_n && first == INT_MAX) {
      cum += unit ? 1.0 : static_cast<double>(L.w[j]);
      if (cum >= target) first = rank;
    }
  }
  const int r = block_min(first, s);
  return r == INT_MAX ? limit_n - 1 : r;
}

// The total weight of ranks < limit_n.
__device__ double list_mass(const List& L, int limit_n, Smem& s) {
  double mine = 0.0;
#pragma unroll
  for (int j = 0; j < kItems; ++j)
    if (static_cast<int>(threadIdx.x) * kItems + j < limit_n) mine += static_cast<double>(L.w[j]);
  return block_sum(mine, s);
}

// The (key, id) of rank r.
__device__ Limit list_limit(const List& L, int r, Smem& s) {
  if (r / kItems == static_cast<int>(threadIdx.x)) {
    uint64_t c = 0;
#pragma unroll
    for (int j = 0; j < kItems; ++j)
      if (j == r % kItems) c = L.key[j] - 1;  // (constant indices keep L in registers)
    s.res_key = static_cast<uint32_t>(c >> L.id_bits) + L.lo;
    s.res_id = static_cast<int>(L.id_mask() - static_cast<uint32_t>(c & L.id_mask()));
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
  int j =
      static_cast<int>(fmin(fmax(ceil((target - q.above) / w), 1.0), static_cast<double>(q.count)));
  while (j > 1 && q.above + (j - 1) * w >= target) --j;
  while (j < q.count && q.above + j * w < target) ++j;
  const int tid = threadIdx.x;
  if (tid == 0) s.res_id = INT_MAX;  // read only after the loop's barriers
  int seen = 0;                      // tied candidates in the tiles before this one
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

// The outcome of a selection: the kept set as a gathered list (its ranks < n_kept), or as a
// threshold.
struct Kept {
  bool listed;
  int n_kept;
  Limit lim;
};

// Finishes the search q whose histogram (with `shift`) is in s: the shortest most-likely prefix
// whose mass (count when unit) reaches target (select_prefix on the CPU).
__device__ Kept select_prefix(const Row& row, Search q, int shift, bool unit, double target,
                              uint32_t top, List& L, Smem& s) {
  for (;;) {
    choose_bin(q, shift, unit, target, s);
    if (q.above_n + q.count <= kCap) {  // the whole prefix fits: gather it
      gather_sorted(row, q.lo, top, q.lim, L, s);
      return Kept{true, list_crossing(L, L.n, unit, 0.0, target, s) + 1, q.lim};
    }
    if (q.count <= kCap) {  // the bin fits: gather it for the threshold
      gather_sorted(row, q.lo, q.hi, q.lim, L, s);
      return Kept{false, 0, list_limit(L, list_crossing(L, L.n, unit, q.above, target, s), s)};
    }
    if (q.lo == q.hi) return Kept{false, 0, ties_finish(row, q, unit, target, s)};
    shift = histogram(row, q, s);
  }
}

// The draw over a gathered kept set: its tokens re-sorted by id, the first whose running
// weight exceeds u * total.
__device__ int draw_from_list(List& L, int n_kept, float u, Smem& s) {
  const int tid = threadIdx.x;
  const uint32_t id_mask = L.id_mask();
#pragma unroll
  for (int j = 0; j < kItems; ++j) {
    const bool kept = tid * kItems + j < n_kept;
    const uint64_t c = L.key[j] - 1;
    L.key[j] =
        kept ? static_cast<uint64_t>(id_mask - static_cast<uint32_t>(c & id_mask)) : id_mask + 1ull;
    if (!kept) L.w[j] = 0.0f;
  }
  __syncthreads();
  BlockSort(s.big.gather.sort).Sort(L.key, L.w, 0, L.id_bits + 1);
  double mine = 0.0;
  int last = -1;
#pragma unroll
  for (int j = 0; j < kItems; ++j) {
    mine += static_cast<double>(L.w[j]);
    if (L.w[j] > 0.0f) last = static_cast<int>(L.key[j]);
  }
  double before = 0.0, total = 0.0;
  __syncthreads();
  BlockScanD(s.small.scan_d).ExclusiveSum(mine, before, total);
  const double target = static_cast<double>(u) * total;
  double cum = before;
  int found = INT_MAX;
#pragma unroll
  for (int j = 0; j < kItems; ++j) {
    if (L.w[j] == 0.0f || found != INT_MAX) continue;
    cum += static_cast<double>(L.w[j]);
    if (target < cum) found = static_cast<int>(L.key[j]);
  }
  found = block_min(found, s);
  return found != INT_MAX ? found : block_max(last, s);
}

// The draw over the kept set of a threshold: two passes over the vocabulary, the second by
// tiles in id order that stops at the tile holding the token.
__device__ int draw_from_limit(const Row& row, Limit lim, float u, int fallback, Smem& s) {
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
  const SampleRow prm = p.device_rows != nullptr ? p.device_rows[blockIdx.x] : p.row[blockIdx.x];
  Row row =
      make_row(p.logits + static_cast<int64_t>(blockIdx.x) * p.ld, p.vocab, prm.inv_temperature);

  // 1. argmax over usable logits (lowest id among equal maxima: each thread scans ids upwards),
  // and the smallest usable key (the bottom of the searches' range).
  ArgMax best{-INFINITY, INT_MAX};
  uint32_t low = 0xffffffffu;
  for_each_token(row, [&](int i, float f) {
    if (!usable(f)) return;
    if (best.id == INT_MAX || f > best.value) best = ArgMax{f, i};
    low = min(low, order_key(f));
  });
  best = block_argmax(best, s);
  if (best.id == INT_MAX || prm.top_k == 1) {  // no usable logit: token 0; greedy: argmax
    if (threadIdx.x == 0) p.out[blockIdx.x] = best.id == INT_MAX ? 0 : best.id;
    return;
  }
  low = block_min_key(low, s);
  row.max_logit = best.value;
  const uint32_t top = order_key(best.value);

  // 2-3. top-k, then top-p over what top-k kept.
  List L;
  Kept kept{false, 0, kNoLimit};
  bool fresh_histogram = false;  // s holds the histogram of every candidate (no limit yet)
  int shift = 0;
  if (prm.top_k > 0) {
    const Search q{kNoLimit, low, top, 0, 0, 0.0};
    shift = histogram(row, q, s);
    int n = 0;
    for (int b = 0; b < kBins; ++b) n += s.bin_n[b];
    if (prm.top_k < n) {
      kept = select_prefix(row, q, shift, true, static_cast<double>(prm.top_k), top, L, s);
    } else {
      fresh_histogram = true;
    }
  }
  if (prm.top_p < 1.0f) {
    if (kept.listed) {
      const double target = static_cast<double>(prm.top_p) * list_mass(L, kept.n_kept, s);
      kept.n_kept = list_crossing(L, kept.n_kept, false, 0.0, target, s) + 1;
    } else {
      const Search q{kept.lim, kept.lim.key > low ? kept.lim.key : low, top, 0, 0, 0.0};
      if (!fresh_histogram) shift = histogram(row, q, s);
      double mass = 0.0;
      for (int b = 0; b < kBins; ++b) mass += s.bin_w[b];
      kept = select_prefix(row, q, shift, false, static_cast<double>(prm.top_p) * mass, top, L, s);
    }
  }

  // 4. the draw.
  const int token = kept.listed ? draw_from_list(L, kept.n_kept, prm.u, s)
                                : draw_from_limit(row, kept.lim, prm.u, best.id, s);
  if (threadIdx.x == 0) p.out[blockIdx.x] = token;
}

}  // namespace
}  // namespace sampling

void launch_sample(const SampleLaunch& p, cudaStream_t stream) {
  if (p.rows == 0) return;
  const int smem =
      static_cast<int>(sizeof(sampling::Smem));  // over the 48 KB a launch gets unasked
  {  // once per device (a host-side setting; kept out of the launch path, e.g. graph capture)
    static std::mutex mu;
    static std::vector<int> devices_set;
    int dev = 0;
    FA_CUDA_CHECK(cudaGetDevice(&dev));
    const std::lock_guard<std::mutex> lock(mu);
    if (std::find(devices_set.begin(), devices_set.end(), dev) == devices_set.end()) {
      FA_CUDA_CHECK(cudaFuncSetAttribute(sampling::sample_kernel,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
      devices_set.push_back(dev);
    }
  }
  sampling::sample_kernel<<<p.rows, sampling::kThreads, smem, stream>>>(p);
  FA_CUDA_CHECK_LAUNCH("sample_kernel");
}

}  // namespace fastattn::kernels::cuda
