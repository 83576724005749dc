// CPU attention driver: turns validated FmhaParams into tile jobs, runs them on OpenMP threads
// (dynamic schedule, heaviest first, since causal masks make tiles uneven), and merges split-KV
// partial results by log-sum-exp.
//
// Jobs: for each sequence and KV head, its rows (query tokens x the KV group's query heads) are
// cut into jobs of up to 4 x 64 rows (wide kernel; fewer rows per job when there would be too few
// jobs for the threads) or kept as one job of <= 8 rows (narrow kernel, decode). When those
// cannot keep the threads busy (decode with a small batch), each one's visible key range is
// split (split-KV); every split writes a normalised partial output and its LSE, and a second
// parallel pass combines them.
#include "fastattn/kernels/cpu/fmha_cpu.h"

#include <algorithm>
#include <cmath>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "fastattn/core/allocator.h"
#include "fastattn/kernels/attention/fmha_softmax.h"
#include "fastattn/kernels/cpu/fmha_cpu_impl.h"

namespace fastattn::kernels::cpu {
namespace {

// Split-KV: used when fewer than kSplitBelowJobsPerThread tile jobs per thread exist; then aims
// for kSplitTargetJobsPerThread jobs per thread, never splitting below kMinSplitKeys keys.
constexpr int kSplitBelowJobsPerThread = 2;
constexpr int kSplitTargetJobsPerThread = 4;
constexpr int64_t kMinSplitKeys = 256;
// Below this much work (rows x keys x head dim, summed over jobs) a call runs single-threaded.
constexpr double kMinParallelWork = 1 << 18;
// Wide jobs shrink (fewer 64-row sub-tiles each) until there are this many per thread.
constexpr int kMinJobsPerThread = 8;

size_t align64(size_t n) { return (n + 63) / 64 * 64; }

// Rows of a tile's partial outputs: an all-heads tile (kv_head < 0) holds every KV head's rows,
// head after head.
int64_t slot_rows(const AttnArgs& a, int kv_head, int64_t rows) {
  return kv_head < 0 ? rows * a.num_heads_k : rows;
}

AttnArgs make_args(const FmhaParams& p, const FmhaShape& sh) {
  AttnArgs a;
  a.q = static_cast<const char*>(p.q.data());
  a.q_dtype = p.q.dtype();
  a.q_tok_stride = p.q.stride(0), a.q_head_stride = p.q.stride(1);
  a.out = static_cast<char*>(p.out.data());
  a.out_dtype = p.out.dtype();
  a.o_tok_stride = p.out.stride(0), a.o_head_stride = p.out.stride(1);
  if (p.lse.defined()) {
    a.lse = p.lse.data_as<float>();
    a.lse_head_stride = p.lse.stride(0), a.lse_tok_stride = p.lse.stride(1);
  }
  a.k = static_cast<const char*>(p.k.data());
  a.v = static_cast<const char*>(p.v.data());
  a.kv_dtype = p.k.dtype();
  a.paged = sh.paged;
  if (sh.paged) {
    a.k_blk_stride = p.k.stride(0), a.k_tok_stride = p.k.stride(1), a.k_head_stride = p.k.stride(2);
    a.v_blk_stride = p.v.stride(0), a.v_tok_stride = p.v.stride(1), a.v_head_stride = p.v.stride(2);
    a.block_size = sh.block_size;
    a.block_table = p.block_table.data_as<int32_t>();
    a.block_table_stride = p.block_table.stride(0);
    a.seqlens_k = p.seqlens_k.data_as<int32_t>();
  } else {
    a.k_tok_stride = p.k.stride(0), a.k_head_stride = p.k.stride(1);
    a.v_tok_stride = p.v.stride(0), a.v_head_stride = p.v.stride(1);
    a.cu_seqlens_k = p.cu_seqlens_k.data_as<int32_t>();
  }
  a.cu_seqlens_q = p.cu_seqlens_q.data_as<int32_t>();
  a.num_heads_q = sh.num_heads_q, a.num_heads_k = sh.num_heads_k;
  a.group = sh.num_heads_q / sh.num_heads_k;
  a.head_dim = sh.head_dim;
  const FmhaSoftmax sm = fmha_softmax(p, sh.head_dim);
  a.scale_log2 = sm.scale_log2;
  a.causal = p.causal;
  a.window_left = sm.window_left, a.window_right = sm.window_right;
  a.alibi = sm.alibi_slopes;
  a.alibi_batch_stride = sm.alibi_batch_stride, a.alibi_head_stride = sm.alibi_head_stride;
  return a;
}

// The keys [begin, end) some row of a row range may see (the union of the rows' ranges).
struct KeySpan {
  int64_t begin = 0, end = 0;
};

KeySpan visible_key_span(const AttnArgs& a, const SeqInfo& s, int64_t row_begin, int64_t row_end) {
  KeySpan span{INT64_MAX, INT64_MIN};
  for (int64_t tok = row_begin / a.group; tok <= (row_end - 1) / a.group; ++tok) {
    const KeyRange kr = visible_keys(a, s, tok);
    if (kr.lo > kr.hi) continue;
    span.begin = std::min<int64_t>(span.begin, kr.lo);
    span.end = std::max<int64_t>(span.end, int64_t{kr.hi} + 1);
  }
  if (span.begin >= span.end) return KeySpan{};
  return span;
}

struct Plan {
  std::vector<TileJob> jobs;
  // Split-KV groups: the jobs of one tile that cover different key ranges, merged at the end.
  struct Merge {
    int64_t seq;
    int kv_head;
    int64_t row_begin, row_end;
    int splits;
    size_t offset;  // start of this group's outputs [splits][rows][D] and LSEs [splits][rows]
    float* partial_o = nullptr;
    float* partial_lse = nullptr;
  };
  std::vector<Merge> merges;
  size_t partial_floats = 0;
  int max_wide_tiles = 0;  // most 64-row sub-tiles in one wide job (0: narrow jobs only)
  double work = 0.0;       // sum over jobs of rows x keys x head dim (multiply-adds per product)
};

Plan make_plan(const AttnArgs& a, const FmhaShape& sh, int threads) {
  Plan plan;
  struct Tile {
    int64_t seq;
    int kv_head;
    int64_t row_begin, row_end;
    KeySpan keys;
  };
  // Wide jobs take up to kMaxSubTiles tiles of 64 rows, fewer when that would leave fewer than
  // kMinJobsPerThread jobs per thread.
  int sub_tiles = kMaxSubTiles;
  for (; sub_tiles > 1; sub_tiles /= 2) {
    int64_t jobs = 0;
    for (int64_t b = 0; b < sh.batch; ++b) {
      const int64_t tiles64 = (seq_info(a, b).sq * a.group + kWideMaxRows - 1) / kWideMaxRows;
      jobs += (tiles64 + sub_tiles - 1) / sub_tiles * a.num_heads_k;
    }
    if (jobs >= static_cast<int64_t>(kMinJobsPerThread) * threads) break;
  }
  std::vector<Tile> tiles;
  const bool all_heads = a.num_heads_k > 1 && narrow_all_heads_supported(a);
  for (int64_t b = 0; b < sh.batch; ++b) {
    const SeqInfo s = seq_info(a, b);
    const int64_t rows = s.sq * a.group;
    if (rows == 0) continue;
    const int64_t tile_rows = rows <= kNarrowMaxRows ? rows : int64_t{kWideMaxRows} * sub_tiles;
    if (rows <= kNarrowMaxRows && all_heads) {
      // One tile for all KV heads: it reads each K / V block front to back (see
      // narrow_all_heads_supported).
      tiles.push_back({b, -1, 0, rows, visible_key_span(a, s, 0, rows)});
      continue;
    }
    for (int h = 0; h < a.num_heads_k; ++h) {
      for (int64_t r0 = 0; r0 < rows; r0 += tile_rows) {
        const int64_t r1 = std::min(rows, r0 + tile_rows);
        tiles.push_back({b, h, r0, r1, visible_key_span(a, s, r0, r1)});
      }
    }
  }
  const int64_t n_tiles = static_cast<int64_t>(tiles.size());
  int64_t max_splits = 1;
  if (n_tiles < static_cast<int64_t>(kSplitBelowJobsPerThread) * threads) {
    max_splits = (static_cast<int64_t>(kSplitTargetJobsPerThread) * threads + n_tiles - 1) /
                 std::max<int64_t>(1, n_tiles);
  }
  for (const Tile& t : tiles) {
    const SeqInfo s = seq_info(a, t.seq);
    const int64_t n_keys = t.keys.end - t.keys.begin;
    int64_t splits = std::min(max_splits, std::max<int64_t>(1, n_keys / kMinSplitKeys));
    // Splits cover the visible keys; their bounds fall on kKvTile multiples, so every split sees
    // whole aligned tiles.
    const int64_t first = t.keys.begin / kKvTile * kKvTile;
    int64_t per_split = s.sk;
    if (splits > 1) {
      per_split = ((t.keys.end - first + splits - 1) / splits + kKvTile - 1) / kKvTile * kKvTile;
      splits = (t.keys.end - first + per_split - 1) / per_split;
    }
    const int64_t rows = slot_rows(a, t.kv_head, t.row_end - t.row_begin);
    const size_t rows_d = static_cast<size_t>(rows) * static_cast<size_t>(a.head_dim);
    for (int64_t sp = 0; sp < splits; ++sp) {
      TileJob job;
      job.seq = t.seq, job.kv_head = t.kv_head;
      job.row_begin = t.row_begin, job.row_end = t.row_end;
      job.narrow = s.sq * a.group <= kNarrowMaxRows;
      if (!job.narrow) {
        plan.max_wide_tiles = std::max(plan.max_wide_tiles,
                                       static_cast<int>((rows + kWideMaxRows - 1) / kWideMaxRows));
      }
      if (splits > 1) {
        job.key_begin = first + sp * per_split;
        job.key_end = std::min(t.keys.end, first + (sp + 1) * per_split);
      } else {
        job.key_begin = 0, job.key_end = s.sk;
      }
      job.cost = static_cast<double>(rows) *
                 static_cast<double>(std::min(n_keys, job.key_end - job.key_begin) + kKvTile);
      if (splits > 1) {
        job.split_group = static_cast<int64_t>(plan.merges.size());
        job.split_index = static_cast<int>(sp);
      }
      plan.work += job.cost * a.head_dim;
      plan.jobs.push_back(job);
    }
    if (splits > 1) {
      plan.merges.push_back({t.seq, t.kv_head, t.row_begin, t.row_end, static_cast<int>(splits),
                             plan.partial_floats});
      plan.partial_floats += static_cast<size_t>(splits) * (rows_d + static_cast<size_t>(rows));
    }
  }
  std::stable_sort(plan.jobs.begin(), plan.jobs.end(),
                   [](const TileJob& x, const TileJob& y) { return x.cost > y.cost; });
  return plan;
}

// Combines the splits of one row: out = sum_s w_s o_s with w_s = 2^(lse_s - lse) / normaliser.
void merge_row(const AttnArgs& a, const Plan::Merge& mg, int64_t r, float* acc) {
  const int D = a.head_dim;
  const int64_t rows = slot_rows(a, mg.kv_head, mg.row_end - mg.row_begin);
  float lse_max = -INFINITY;
  bool nan = false;  // a split that saw NaN / inf inputs makes the whole row NaN
  for (int sp = 0; sp < mg.splits; ++sp) {
    const float lse = mg.partial_lse[sp * rows + r];
    nan = nan || std::isnan(lse);
    lse_max = std::fmax(lse_max, lse);
  }
  for (int d = 0; d < D; ++d) acc[d] = nan ? NAN : 0.0f;
  float total = nan ? NAN : 0.0f;
  if (nan) lse_max = NAN;
  if (!nan && lse_max != -INFINITY) {
    for (int sp = 0; sp < mg.splits; ++sp) {
      const float w = std::exp2(mg.partial_lse[sp * rows + r] - lse_max);
      if (w == 0.0f) continue;
      const float* o = mg.partial_o + (sp * rows + r) * D;
      for (int d = 0; d < D; ++d) acc[d] += w * o[d];
      total += w;
    }
  }
  // write_row divides by l and reports m + log2(l): pass the merged sum and max.
  TileJob direct;
  direct.seq = mg.seq, direct.kv_head = mg.kv_head;
  direct.row_begin = mg.row_begin, direct.row_end = mg.row_end;
  int64_t row = mg.row_begin + r;
  if (mg.kv_head < 0) {  // all-heads tile: slot row r is head r / rows' row r % rows
    const int64_t head_rows = mg.row_end - mg.row_begin;
    direct.kv_head = static_cast<int>(r / head_rows);
    row = mg.row_begin + r % head_rows;
  }
  write_row(a, seq_info(a, mg.seq), direct, row, acc, lse_max, total);
}

}  // namespace

void write_row(const AttnArgs& a, const SeqInfo& s, const TileJob& job, int64_t row, float* o,
               float m, float l) {
  const int D = a.head_dim;
  const bool seen = l != 0.0f;  // NaN (from NaN / inf inputs) is seen: it propagates
  const float inv = seen ? 1.0f / l : 0.0f;
  for (int d = 0; d < D; ++d) o[d] = seen ? o[d] * inv : 0.0f;
  const float lse2 = seen ? m + std::log2(l) : -INFINITY;
  if (job.partial_o != nullptr) {
    const int64_t local = row - job.row_begin;
    std::copy(o, o + D, job.partial_o + local * D);
    job.partial_lse[local] = lse2;
    return;
  }
  const int64_t tok = s.q_begin + row / a.group;
  const int head = job.kv_head * a.group + static_cast<int>(row % a.group);
  char* dst = a.out + (tok * a.o_tok_stride + head * a.o_head_stride) *
                          static_cast<int64_t>(dtype_size(a.out_dtype));
  convert_from_float(o, dst, a.out_dtype, D);
  if (a.lse != nullptr) a.lse[head * a.lse_head_stride + tok * a.lse_tok_stride] = lse2 * kLn2;
}

size_t layout_scratch(void* base, const ScratchShape& shape, Scratch* sc) {
  const size_t D = static_cast<size_t>(shape.head_dim);
  const size_t dpad = (D + 15) / 16 * 16;
  const size_t W = kWideMaxRows;
  // The narrow kernel uses tile 0 as [8][dpad] Q / O rows and [8][kKvTile] probabilities.
  const bool wide = shape.wide_tiles > 0;
  const size_t q_floats = wide ? D * W : kNarrowMaxRows * dpad;
  const size_t s_floats = wide ? kKvTile * W : kNarrowMaxRows * kKvTile;
  const size_t kv_floats =
      shape.convert_kv ? static_cast<size_t>(kKvTile) * converted_row_stride(shape.head_dim) : 0;
  size_t used = 0;
  auto take = [&](size_t bytes) {
    char* r = base != nullptr && bytes > 0 ? static_cast<char*>(base) + used : nullptr;
    used += align64(bytes);
    return r;
  };
  Scratch local;
  Scratch& s = sc != nullptr ? *sc : local;
  for (int i = 0; i < kMaxSubTiles; ++i) {
    RowTile& t = s.tiles[i];
    const bool used_tile = i == 0 || i < shape.wide_tiles;
    const size_t n = used_tile ? 1 : 0;
    t.qt = reinterpret_cast<float*>(take(n * q_floats * 4));
    t.ot = reinterpret_cast<float*>(take(n * q_floats * 4));
    t.st = reinterpret_cast<float*>(take(n * s_floats * 4));
    t.m = reinterpret_cast<float*>(take(n * W * 4));
    t.l = reinterpret_cast<float*>(take(n * W * 4));
    t.slope = reinterpret_cast<float*>(take(n * W * 4));
    t.lo = reinterpret_cast<int32_t*>(take(n * W * 4));
    t.hi = reinterpret_cast<int32_t*>(take(n * W * 4));
    t.pos = reinterpret_cast<int32_t*>(take(n * W * 4));
  }
  s.kbuf = reinterpret_cast<float*>(take(kv_floats * 4));
  s.vbuf = reinterpret_cast<float*>(take(kv_floats * 4));
  s.row = reinterpret_cast<float*>(take(dpad * 4));
  s.kptr = reinterpret_cast<const float**>(take(kKvTile * sizeof(float*)));
  s.vptr = reinterpret_cast<const float**>(take(kKvTile * sizeof(float*)));
  return used;
}

void fmha_forward_cpu(const Context& ctx, const FmhaParams& p, const FmhaShape& shape) {
  const AttnArgs a = make_args(p, shape);
  const int threads = std::max(1, context_threads(ctx));
  Plan plan = make_plan(a, shape, threads);
  if (plan.jobs.empty()) return;

  const int64_t n_jobs = static_cast<int64_t>(plan.jobs.size());
  // Tiny calls (a few decode rows over short contexts) run on the calling thread: waking the
  // OpenMP team would cost more than the work.
  const int used_threads =
      plan.work < kMinParallelWork ? 1 : static_cast<int>(std::min<int64_t>(threads, n_jobs));
  Allocator* alloc = ctx.allocator != nullptr && ctx.allocator->device().is_cpu_addressable()
                         ? ctx.allocator
                         : host_allocator();
  ScratchShape scratch_shape;
  scratch_shape.head_dim = shape.head_dim;
  scratch_shape.wide_tiles = plan.max_wide_tiles;
  scratch_shape.convert_kv = a.kv_dtype != DType::kFloat32;
  const size_t per_thread = layout_scratch(nullptr, scratch_shape, nullptr);
  const size_t partial_bytes = align64(plan.partial_floats * sizeof(float));
  Buffer scratch(alloc, per_thread * static_cast<size_t>(used_threads) + partial_bytes);
  char* base = static_cast<char*>(scratch.data());
  float* partial = reinterpret_cast<float*>(base + per_thread * static_cast<size_t>(used_threads));
  for (Plan::Merge& mg : plan.merges) {
    const size_t rows_d =
        static_cast<size_t>(slot_rows(a, mg.kv_head, mg.row_end - mg.row_begin)) * shape.head_dim;
    mg.partial_o = partial + mg.offset;
    mg.partial_lse = mg.partial_o + static_cast<size_t>(mg.splits) * rows_d;
  }
  for (TileJob& job : plan.jobs) {
    if (job.split_group < 0) continue;
    const Plan::Merge& mg = plan.merges[static_cast<size_t>(job.split_group)];
    const int64_t rows = slot_rows(a, mg.kv_head, mg.row_end - mg.row_begin);
    job.partial_o = mg.partial_o + static_cast<int64_t>(job.split_index) * rows * shape.head_dim;
    job.partial_lse = mg.partial_lse + static_cast<int64_t>(job.split_index) * rows;
  }

#pragma omp parallel num_threads(used_threads)
  {
#if defined(_OPENMP)
    const int tid = omp_get_thread_num();
#else
    const int tid = 0;
#endif
    Scratch sc;
    layout_scratch(base + per_thread * static_cast<size_t>(tid), scratch_shape, &sc);
#pragma omp for schedule(dynamic, 1)
    for (int64_t i = 0; i < n_jobs; ++i) {
      const TileJob& job = plan.jobs[static_cast<size_t>(i)];
      if (job.narrow) {
        run_narrow_job(a, job, sc);
      } else {
        run_wide_job(a, job, sc);
      }
    }
    if (!plan.merges.empty()) {
#pragma omp for schedule(dynamic, 1)
      for (int64_t i = 0; i < static_cast<int64_t>(plan.merges.size()); ++i) {
        const Plan::Merge& mg = plan.merges[static_cast<size_t>(i)];
        const int64_t rows = slot_rows(a, mg.kv_head, mg.row_end - mg.row_begin);
        for (int64_t r = 0; r < rows; ++r) merge_row(a, mg, r, sc.row);
      }
    }
  }
}

}  // namespace fastattn::kernels::cpu
