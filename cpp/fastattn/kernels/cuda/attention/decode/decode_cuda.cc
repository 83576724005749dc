// Host side of the split-KV decode kernels: picks the row tile and the split count, takes
// scratch for the partials and launches the split and merge kernels. The arguments were checked
// by fmha.cc and the kernel (copy path) chosen by attention_dispatch.cc.
#include "fastattn/kernels/cuda/attention/decode/decode_cuda.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <map>
#include <mutex>
#include <utility>
#include <vector>

#include "fastattn/core/allocator.h"
#include "fastattn/core/cuda/cuda_check.h"
#include "fastattn/core/cuda/device_guard.h"
#include "fastattn/core/env.h"
#include "fastattn/kernels/attention/fmha_softmax.h"
#include "fastattn/kernels/cuda/attention/attention_device_cuda.h"
#include "fastattn/kernels/cuda/attention/attention_registry.h"
#include "fastattn/kernels/cuda/attention/decode/decode_launch.h"
#include "fastattn/kernels/cuda/attention/decode/decode_params.h"
#include "fastattn/kernels/cuda/device_props.h"

namespace fastattn::kernels::cuda {
namespace {

// How the split kernel copies K / V tiles from global to shared memory.
enum class DecodeCopyPath {
  kAuto,       // the device's preferred path (preferred_decode_kernel)
  kAsync,      // cp.async stages (sm_80+; AttentionKernel::kDecodeAsync)
  kRegisters,  // 16-byte loads staged in registers (AttentionKernel::kDecodeRegStaged)
};

constexpr int kThreads = 128;  // 4 warps per split CTA (DecodeTraits::kThreads)
// A split below this many keys costs more in merging than it gains. FASTATTN_DECODE_MIN_SPLIT_KEYS
// overrides it (an A/B knob for bench decode / e2e: 1..65536).
constexpr int kMinKeysPerSplit = 64;

int min_keys_per_split() {
  static const int keys =
      static_cast<int>(env_int("FASTATTN_DECODE_MIN_SPLIT_KEYS", kMinKeysPerSplit, 1, 65536));
  return keys;
}
constexpr int kMinCtasPerSm = 2;  // the heuristic aims for at least 2 x SMs CTAs

// Every compiled decode kernel, one entry per (dtype, head dim, row tile), from the attention
// registry's decode instances (each file is registered under both copy paths: taken once).
const std::vector<DecodeKernelEntry>& decode_table() {
  static const std::vector<DecodeKernelEntry> table = [] {
    std::vector<DecodeKernelEntry> t;
    int rows = 0;
    const AttentionInstance* instances = attention_instance_table(&rows);
    for (int i = 0; i < rows; ++i) {
      if (instances[i].kernel != AttentionKernel::kDecodeRegStaged) continue;
      int n = 0;
      const DecodeKernelEntry* e = instances[i].decode_entries(&n);
      t.insert(t.end(), e, e + n);
    }
    return t;
  }();
  return table;
}

// Raises the kernel's dynamic shared-memory limit on the current device (once per device) and
// returns how many of its CTAs fit on one SM.
int prepare_kernel(const void* kernel, size_t smem, int dev) {
  static std::mutex mu;
  static std::map<std::pair<const void*, int>, int> cache;
  std::lock_guard<std::mutex> lock(mu);
  const auto key = std::make_pair(kernel, dev);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  // Fails with "invalid device function" when the build has no image for this GPU.
  FA_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     static_cast<int>(smem)));
  int blocks = 0;
  FA_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, kThreads, smem));
  FA_CHECK(blocks >= 1, "the CUDA decode kernel needs ", smem,
           " bytes of shared memory per block, more than device ", dev, " has");
  cache[key] = blocks;
  return blocks;
}

// Arrival counters for the merge done by the last split CTA of each tile: one buffer per
// (device, stream), zeroed once (stream-ordered) and left zero by every launch. Kernels on one
// stream run one after another, so no two launches use a buffer at the same time. Launches with
// more tiles than this fall back to the separate merge kernel.
constexpr int64_t kMaxSplitCounters = 4096;

unsigned* split_counters(int dev, cudaStream_t stream) {
  static std::mutex mu;
  static std::map<std::pair<int, cudaStream_t>, unsigned*> buffers;
  std::lock_guard<std::mutex> lock(mu);
  unsigned*& counters = buffers[{dev, stream}];
  if (counters == nullptr) {  // kept for the life of the process (16 KB per stream)
    // Allocating and zeroing them inside a stream capture would invalidate it with an error that
    // names neither the cause nor the fix.
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    FA_CUDA_CHECK(cudaStreamIsCapturing(stream, &capture));
    FA_CHECK(capture == cudaStreamCaptureStatusNone,
             "split-KV decode attention: the first split launch on a stream sets up its arrival "
             "counters and cannot be captured in a CUDA graph; run one call on this stream "
             "eagerly before capturing (as a graph warm-up does), or pass num_splits=1");
    const size_t bytes = kMaxSplitCounters * sizeof(unsigned);
    void* ptr = device_allocator(dev)->allocate(bytes);
    FA_CUDA_CHECK(cudaMemsetAsync(ptr, 0, bytes, stream));
    counters = static_cast<unsigned*>(ptr);
  }
  return counters;
}

// FASTATTN_DECODE_MIN_ROWS (1..16, default 1) keeps tiles smaller than it unused: 4 gives the
// row tiles of before the 1- and 2-row instances, for an A/B in one build (bench e2e / decode).
int min_row_tile() {
  static const int rows = static_cast<int>(env_int("FASTATTN_DECODE_MIN_ROWS", 1, 1, 16));
  return rows;
}

// The smallest row tile that holds a sequence's (token, head) rows, else the largest.
const DecodeKernelEntry* pick_entry(DType dtype, int head_dim, int64_t rows_needed) {
  rows_needed = std::max<int64_t>(rows_needed, min_row_tile());
  const DecodeKernelEntry* best = nullptr;
  for (const DecodeKernelEntry& e : decode_table()) {
    if (e.dtype != dtype || e.head_dim != head_dim) continue;
    if (best == nullptr) {
      best = &e;
      continue;
    }
    const bool fits = e.rows >= rows_needed, best_fits = best->rows >= rows_needed;
    if ((fits && (!best_fits || e.rows < best->rows)) ||
        (!fits && !best_fits && e.rows > best->rows)) {
      best = &e;
    }
  }
  return best;
}

// Keys one query tile can see at most: all of them, or the window's width.
int64_t visible_keys(int window_left, int window_right, int64_t max_k, int rows, int group) {
  if (window_left < 0 || window_right < 0) return max_k;
  const int64_t positions = (rows + group - 1) / group + 1;  // query tokens a tile spans
  return std::min<int64_t>(max_k, window_left + window_right + positions);
}

int64_t pow2_floor(int64_t n) {
  int64_t p = 1;
  while (p * 2 <= n) p *= 2;
  return n >= 1 ? p : 0;
}

// Split count. The CTAs of a launch do equal work, so the count is chosen to fill whole waves
// of resident CTAs (SMs x CTAs per SM): the fewest waves that give at least kMinCtasPerSm x SMs
// CTAs, each as full as possible (a last wave of a few CTAs would leave most SMs idle while
// they finish). No split gets fewer than min_keys_per_split() keys.
int heuristic_splits(int sms, int ctas_per_sm, int64_t base_ctas, int64_t keys, int block_n) {
  if (keys <= 0 || base_ctas <= 0) return 1;
  const int64_t slots = static_cast<int64_t>(sms) * ctas_per_sm;  // one wave
  const int64_t want = static_cast<int64_t>(sms) * kMinCtasPerSm;
  int64_t splits = 1;
  if (base_ctas < want) {
    const int64_t min_splits = (want + base_ctas - 1) / base_ctas;
    for (int64_t waves = 1;; ++waves) {  // the fewest whole waves holding min_splits per CTA
      splits = waves * slots / base_ctas;
      if (splits >= min_splits) break;
    }
  }
  // Below whole waves, the count grows with the keys in powers of two, so a decode step sees
  // only a few distinct counts as its context grows (each is a separate CUDA graph).
  splits = std::min<int64_t>(splits, pow2_floor(keys / min_keys_per_split()));
  splits = std::min<int64_t>(splits, (keys + block_n - 1) / block_n);
  splits = std::min<int64_t>(splits, kMaxNumSplits);
  return static_cast<int>(std::max<int64_t>(splits, 1));
}

// The kernel instance, copy path and grid rows of a launch on device `dev`.
struct KernelChoice {
  const DecodeKernelEntry* entry = nullptr;
  const void* kernel = nullptr;
  size_t smem = 0;
  int block_n = 0;
  int ctas_per_sm = 0;
  int sms = 0;
  int64_t q_tiles = 0;  // query tiles per (sequence, KV head)
  int splits_for(int64_t batch_heads, int64_t keys) const {
    return heuristic_splits(sms, ctas_per_sm, batch_heads * q_tiles, keys, block_n);
  }
};

KernelChoice choose_kernel(int dev, DType dt, int head_dim, int64_t rows_needed,
                           DecodeCopyPath path) {
  const DeviceProps props = device_props(dev);
  KernelChoice k;
  k.entry = pick_entry(dt, head_dim, rows_needed);
  if (path == DecodeCopyPath::kAuto) {
    const AttentionKernel preferred = preferred_decode_kernel(attention_device(dev), dt, head_dim);
    path = preferred == AttentionKernel::kDecodeAsync ? DecodeCopyPath::kAsync
                                                      : DecodeCopyPath::kRegisters;
  }
  const bool async = path == DecodeCopyPath::kAsync;
  // Below sm_80 decode_split_kernel<..., kRegStaging = false> is itself register-staged (no
  // cp.async there), and the kRegStaging = true instance traps (decode_kernel.cuh).
  k.kernel = async || props.cc < 80 ? k.entry->kernel : k.entry->kernel_reg;
  k.smem = async ? k.entry->smem_async : k.entry->smem_reg;
  k.block_n = async ? k.entry->block_n : k.entry->block_n_reg;
  k.ctas_per_sm = prepare_kernel(k.kernel, k.smem, dev);
  k.sms = props.sms;
  k.q_tiles = (rows_needed + k.entry->rows - 1) / k.entry->rows;
  return k;
}

}  // namespace

int decode_num_splits(int device, const DecodeSplitQuery& q) {
  FA_CHECK(decode_supports(q.dtype, q.head_dim), "no CUDA decode kernel for head dim ", q.head_dim,
           " and dtype ", dtype_name(q.dtype));
  FA_CHECK(q.num_heads_k > 0 && q.num_heads_q % q.num_heads_k == 0 && q.max_seqlen_q > 0,
           "decode_num_splits: bad shape");
  const DeviceGuard guard(device);
  const int group = q.num_heads_q / q.num_heads_k;
  const KernelChoice k =
      choose_kernel(device, q.dtype, q.head_dim, static_cast<int64_t>(q.max_seqlen_q) * group,
                    DecodeCopyPath::kAuto);
  const int window_right = causal_window_right(q.causal, -1);
  return k.splits_for(q.batch * q.num_heads_k, visible_keys(q.window_left, window_right,
                                                            q.max_seqlen_k, k.entry->rows, group));
}

void decode_reset_split_counters(const Context& ctx) {
  const int dev = ctx.device.index;
  const DeviceGuard guard(dev);
  const auto stream = static_cast<cudaStream_t>(ctx.stream);
  FA_CUDA_CHECK(cudaMemsetAsync(split_counters(dev, stream), 0,
                                kMaxSplitCounters * sizeof(unsigned), stream));
}

bool decode_supports(DType dtype, int head_dim) {
  for (const DecodeKernelEntry& e : decode_table()) {
    if (e.dtype == dtype && e.head_dim == head_dim) return true;
  }
  return false;
}

int device_max_seqlen(const Context& ctx, const Tensor& index, bool cumulative) {
  const int64_t n = index.size(0);
  if (n == 0 || (cumulative && n < 2)) return 0;
  std::vector<int32_t> host(static_cast<size_t>(n));
  const DeviceGuard guard(index.device().index);
  const auto stream = static_cast<cudaStream_t>(ctx.stream);
  FA_CUDA_CHECK(cudaMemcpyAsync(host.data(), index.data(), host.size() * sizeof(int32_t),
                                cudaMemcpyDeviceToHost, stream));
  FA_CUDA_CHECK(cudaStreamSynchronize(stream));
  int longest = 0;
  for (int64_t i = cumulative ? 1 : 0; i < n; ++i) {
    longest = std::max(longest, cumulative ? host[i] - host[i - 1] : host[i]);
  }
  return longest;
}

void decode_forward_cuda(const Context& ctx, const FmhaParams& p, const FmhaShape& sh,
                         AttentionKernel chosen) {
  FA_ASSERT(is_decode_kernel(chosen), "decode_forward_cuda: ", attention_kernel_name(chosen),
            " is not a decode kernel");
  const DecodeCopyPath path =
      chosen == AttentionKernel::kDecodeAsync ? DecodeCopyPath::kAsync : DecodeCopyPath::kRegisters;
  const DType dt = p.q.dtype();
  if (sh.batch == 0 || sh.total_q == 0) return;

  const int dev = p.q.device().index;
  const DeviceGuard guard(dev);
  const int group = sh.num_heads_q / sh.num_heads_k;
  const int max_q =
      sh.max_seqlen_q > 0 ? sh.max_seqlen_q : device_max_seqlen(ctx, p.cu_seqlens_q, true);
  if (max_q == 0) return;
  const KernelChoice k =
      choose_kernel(dev, dt, sh.head_dim, static_cast<int64_t>(max_q) * group, path);
  const DecodeKernelEntry* e = k.entry;
  const void* kernel = k.kernel;
  const size_t smem = k.smem;
  const int64_t q_tiles = k.q_tiles;
  // The grid's x dimension; checked here as it depends on the row tile picked above.
  FA_CHECK(q_tiles * sh.num_heads_k <= INT_MAX, "q: ", max_q, " queries x ", sh.num_heads_q,
           " heads are too many rows for the CUDA decode kernel");

  const FmhaSoftmax sm = fmha_softmax(p, sh.head_dim);
  int splits = p.num_splits;
  if (splits == 0) {
    const Tensor& lengths = sh.paged ? p.seqlens_k : p.cu_seqlens_k;
    const int max_k =
        p.max_seqlen_k > 0 ? p.max_seqlen_k : device_max_seqlen(ctx, lengths, !sh.paged);
    splits = k.splits_for(sh.batch * sh.num_heads_k,
                          visible_keys(sm.window_left, sm.window_right, max_k, e->rows, group));
  }

  DecodeDeviceParams d{};
  d.q = p.q.data();
  d.k = p.k.data();
  d.v = p.v.data();
  d.out = p.out.data();
  d.lse = p.lse.defined() ? p.lse.data_as<float>() : nullptr;
  d.lse_head_stride = p.lse.defined() ? p.lse.stride(0) : 0;
  d.q_row_stride = p.q.stride(0);
  d.q_head_stride = p.q.stride(1);
  d.o_row_stride = p.out.stride(0);
  d.o_head_stride = p.out.stride(1);
  d.cu_seqlens_q = p.cu_seqlens_q.data_as<int32_t>();
  if (sh.paged) {
    d.k_block_stride = p.k.stride(0);
    d.k_row_stride = p.k.stride(1);
    d.k_head_stride = p.k.stride(2);
    d.v_block_stride = p.v.stride(0);
    d.v_row_stride = p.v.stride(1);
    d.v_head_stride = p.v.stride(2);
    d.block_table = p.block_table.data_as<int32_t>();
    d.block_table_stride = p.block_table.stride(0);
    d.seqlens_k = p.seqlens_k.data_as<int32_t>();
    d.block_size = static_cast<int>(sh.block_size);
    d.block_shift = -1;
    if ((sh.block_size & (sh.block_size - 1)) == 0) {
      d.block_shift = 0;
      while ((int64_t{1} << d.block_shift) < sh.block_size) ++d.block_shift;
    }
  } else {
    d.k_row_stride = p.k.stride(0);
    d.k_head_stride = p.k.stride(1);
    d.v_row_stride = p.v.stride(0);
    d.v_head_stride = p.v.stride(1);
    d.cu_seqlens_k = p.cu_seqlens_k.data_as<int32_t>();
  }
  d.batch = static_cast<int>(sh.batch);
  d.num_heads_q = sh.num_heads_q;
  d.num_heads_k = sh.num_heads_k;
  d.group = group;
  d.head_dim = sh.head_dim;
  d.total_q = sh.total_q;
  d.num_splits = splits;
  d.scale_log2 = sm.scale_log2;
  d.window_left = sm.window_left;
  d.window_right = sm.window_right;
  d.alibi_slopes = sm.alibi_slopes;
  d.alibi_batch_stride = static_cast<int>(sm.alibi_batch_stride);

  // Partials of a split launch: [splits, total_q, Hq, D] fp32 outputs, then their LSEs.
  Buffer scratch;
  if (splits > 1) {
    Allocator* alloc = ctx.allocator != nullptr && ctx.allocator->device() == p.q.device()
                           ? ctx.allocator
                           : device_allocator(dev);
    const size_t rows = static_cast<size_t>(sh.total_q) * sh.num_heads_q * splits;
    const size_t out_bytes = rows * sh.head_dim * sizeof(float);
    scratch = Buffer(alloc, out_bytes + rows * sizeof(float));
    d.part_out = static_cast<float*>(scratch.data());
    d.part_lse = reinterpret_cast<float*>(static_cast<char*>(scratch.data()) + out_bytes);
  }

  const auto stream = static_cast<cudaStream_t>(ctx.stream);
  const int64_t grid_tiles = q_tiles * sh.num_heads_k * sh.batch;
  const bool merge_kernel = splits > 1 && grid_tiles > kMaxSplitCounters;
  if (splits > 1 && !merge_kernel) d.split_counters = split_counters(dev, stream);
  void* args[] = {&d};
  FA_CUDA_CHECK(cudaLaunchKernel(kernel,
                                 dim3(static_cast<unsigned>(q_tiles * sh.num_heads_k), splits,
                                      static_cast<unsigned>(sh.batch)),
                                 dim3(kThreads), args, smem, stream));
  if (merge_kernel) {
    const int64_t rows = sh.total_q * sh.num_heads_q;  // one merge CTA each
    FA_CHECK(rows <= INT_MAX, "too many (token, head) rows for the CUDA decode merge: ", rows);
    FA_CUDA_CHECK(cudaLaunchKernel(decode_merge_kernel_for(dt), dim3(static_cast<unsigned>(rows)),
                                   dim3(kDecodeMergeWarps * 32), args, 0, stream));
  }
}

}  // namespace fastattn::kernels::cuda
