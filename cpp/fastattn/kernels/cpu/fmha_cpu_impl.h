// Pieces shared by the CPU attention driver (fmha_cpu.cc) and its two tile kernels:
//   wide   (fmha_cpu_wide.cc):   16..64 query rows, vectorised across query rows (prefill);
//   narrow (fmha_cpu_narrow.cc): 1..8 query rows, vectorised across the head dim (decode).
//
// A "row" is one (query token, query head) pair. The query heads of one KV group are processed
// together, so each K/V tile is loaded once for the whole group: within a sequence and KV head,
// row r is token r / group, query head kv_head * group + r % group.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>

#include "fastattn/core/dtype.h"
#include "fastattn/core/error.h"
#include "fastattn/kernels/attention/softmax_params.h"

namespace fastattn::kernels::cpu {

// Keys per K/V tile.
constexpr int kKvTile = 64;
// Rows of a wide tile: 4 vectors of 16 lanes.
constexpr int kWideMaxRows = 64;
// A wide job holds up to this many tiles of 64 rows: they share each K / V tile while it is in
// cache, which divides the cost of fetching K / V rows (often one memory page apart, in a
// [tokens, heads, D] tensor) by the number of tiles.
constexpr int kMaxSubTiles = 4;
// A (sequence, KV head) with at most this many rows in total takes the narrow kernel.
constexpr int kNarrowMaxRows = 8;
constexpr float kLn2 = 0.6931471805599453f;

// Everything a tile needs to know about the call, as raw pointers and element strides.
struct AttnArgs {
  const char* q = nullptr;
  DType q_dtype = DType::kFloat32;
  int64_t q_tok_stride = 0, q_head_stride = 0;
  char* out = nullptr;
  DType out_dtype = DType::kFloat32;
  int64_t o_tok_stride = 0, o_head_stride = 0;
  float* lse = nullptr;  // null = not requested
  int64_t lse_head_stride = 0, lse_tok_stride = 0;

  const char* k = nullptr;
  const char* v = nullptr;
  DType kv_dtype = DType::kFloat32;
  // Contiguous KV: token and head strides. Paged KV: block, token-in-block and head strides.
  int64_t k_blk_stride = 0, k_tok_stride = 0, k_head_stride = 0;
  int64_t v_blk_stride = 0, v_tok_stride = 0, v_head_stride = 0;
  bool paged = false;
  int64_t block_size = 0;
  const int32_t* block_table = nullptr;
  int64_t block_table_stride = 0;
  const int32_t* seqlens_k = nullptr;
  const int32_t* cu_seqlens_q = nullptr;
  const int32_t* cu_seqlens_k = nullptr;

  int num_heads_q = 0, num_heads_k = 0, group = 1, head_dim = 0;
  float scale_log2 = 0.0f;  // softmax_scale * log2(e): scores live in the log2 domain
  bool causal = false;
  int window_left = -1, window_right = -1;  // window_right: causal caps it at 0 (fmha_softmax)
  const float* alibi = nullptr;             // null = no ALiBi
  int64_t alibi_batch_stride = 0, alibi_head_stride = 0;
};

// One sequence of the batch.
struct SeqInfo {
  int64_t index = 0;
  int64_t q_begin = 0;  // first row of q / out
  int64_t sq = 0;
  int64_t k_begin = 0;  // first row of k / v (contiguous KV)
  int64_t sk = 0;
};

inline SeqInfo seq_info(const AttnArgs& a, int64_t b) {
  SeqInfo s;
  s.index = b;
  s.q_begin = a.cu_seqlens_q[b];
  s.sq = a.cu_seqlens_q[b + 1] - a.cu_seqlens_q[b];
  if (a.paged) {
    s.sk = a.seqlens_k[b];
  } else {
    s.k_begin = a.cu_seqlens_k[b];
    s.sk = a.cu_seqlens_k[b + 1] - a.cu_seqlens_k[b];
  }
  return s;
}

// Addresses of the keys / values of one (sequence, KV head).
struct KvSource {
  const char* k;
  const char* v;
  size_t elem;
  const AttnArgs* a;
  const int32_t* blocks;  // this sequence's block table row (paged)

  KvSource(const AttnArgs& args, const SeqInfo& s, int kv_head)
      : elem(dtype_size(args.kv_dtype)), a(&args) {
    const int64_t tok0 = args.paged ? 0 : s.k_begin;
    k = args.k +
        (tok0 * args.k_tok_stride + kv_head * args.k_head_stride) * static_cast<int64_t>(elem);
    v = args.v +
        (tok0 * args.v_tok_stride + kv_head * args.v_head_stride) * static_cast<int64_t>(elem);
    blocks = args.paged ? args.block_table + s.index * args.block_table_stride : nullptr;
  }
  const char* k_row(int64_t j) const { return row(k, j, a->k_blk_stride, a->k_tok_stride); }
  const char* v_row(int64_t j) const { return row(v, j, a->v_blk_stride, a->v_tok_stride); }
  // Row pointers of keys j0 .. j0 + n of K (kp) and V (vp): one block-table lookup and no
  // division per block touched, rather than per row.
  void rows(int64_t j0, int n, const char** kp, const char** vp) const {
    const int64_t e = static_cast<int64_t>(elem);
    const int64_t ks = a->k_tok_stride * e, vs = a->v_tok_stride * e;
    if (blocks == nullptr) {
      for (int j = 0; j < n; ++j) kp[j] = k + (j0 + j) * ks, vp[j] = v + (j0 + j) * vs;
      return;
    }
    const int64_t bs = a->block_size;
    int64_t b = j0 / bs, t = j0 % bs;
    for (int j = 0; j < n;) {
      const char* kb = k + blocks[b] * a->k_blk_stride * e;
      const char* vb = v + blocks[b] * a->v_blk_stride * e;
      for (; t < bs && j < n; ++t, ++j) kp[j] = kb + t * ks, vp[j] = vb + t * vs;
      ++b, t = 0;
    }
  }

 private:
  const char* row(const char* base, int64_t j, int64_t blk_stride, int64_t tok_stride) const {
    int64_t off;
    if (blocks != nullptr) {
      off = blocks[j / a->block_size] * blk_stride + (j % a->block_size) * tok_stride;
    } else {
      off = j * tok_stride;
    }
    return base + off * static_cast<int64_t>(elem);
  }
};

// Visible key range [lo, hi] of a query token (empty when lo > hi), from the bottom-right
// aligned causal / window masks.
struct KeyRange {
  int32_t lo, hi;
};

inline KeyRange visible_keys(const AttnArgs& a, const SeqInfo& s, int64_t token) {
  const int64_t pos = token + s.sk - s.sq;
  int64_t lo = 0, hi = s.sk - 1;
  if (a.window_left >= 0) lo = std::max<int64_t>(lo, pos - a.window_left);
  if (a.causal) hi = std::min<int64_t>(hi, pos);
  if (a.window_right >= 0) hi = std::min<int64_t>(hi, pos + a.window_right);
  if (lo > hi) return {1, 0};
  return {static_cast<int32_t>(lo), static_cast<int32_t>(hi)};
}

inline bool has_mask(const AttnArgs& a) {
  return a.causal || a.window_left >= 0 || a.window_right >= 0;
}

// ALiBi slope of a query head in the log2 domain (0 without ALiBi).
inline float alibi_slope_log2(const AttnArgs& a, const SeqInfo& s, int head) {
  if (a.alibi == nullptr) return 0.0f;
  return a.alibi[s.index * a.alibi_batch_stride + head * a.alibi_head_stride] * kLog2e;
}

// One unit of parallel work: rows [row_begin, row_end) of a (sequence, KV head) against keys
// [key_begin, key_end). With split-KV, the result goes to a partial slot instead of out / lse.
struct TileJob {
  int64_t seq = 0;
  int kv_head = 0;  // < 0: all KV heads (narrow jobs only; see run_narrow_job)
  int64_t row_begin = 0, row_end = 0;
  int64_t key_begin = 0, key_end = 0;
  bool narrow = false;           // run by the narrow (decode) kernel
  float* partial_o = nullptr;    // [rows, D] normalised output of this split, or null
  float* partial_lse = nullptr;  // [rows] log2-domain LSE of this split
  int64_t split_group = -1;      // split-KV: index of the merge group, and of the split in it
  int split_index = 0;
  double cost = 0.0;  // estimated work, for scheduling heavy jobs first
};

// Writes one finished row: o (unnormalised fp32 accumulator, D values) scaled by 1 / l, with
// m the running max (log2 domain). l == 0 means no visible key: zero output, lse = -inf.
// o is normalised in place.
void write_row(const AttnArgs& a, const SeqInfo& s, const TileJob& job, int64_t row, float* o,
               float m, float l);

// Per-tile state of up to 64 query rows (one wide sub-tile, or the narrow kernel's rows).
struct RowTile {
  float* qt;     // wide: [D][64] scaled Q^T; narrow: [4][Dpad] scaled Q rows
  float* ot;     // wide: [D][64] O^T accumulator; narrow: [4][Dpad]
  float* st;     // wide: [kKvTile][64] scores / probabilities; narrow: [4][kKvTile]
  float* m;      // [64] running max (log2 domain)
  float* l;      // [64] running sum
  float* slope;  // [64] ALiBi slope per row (log2 domain)
  int32_t* lo;   // [64] visible key range per row
  int32_t* hi;   // [64]
  int32_t* pos;  // [64] query position in key coordinates
};

// Thread-local scratch memory, carved from one allocation per thread.
struct Scratch {
  RowTile tiles[kMaxSubTiles];
  float* kbuf;         // [kKvTile][converted_row_stride(D)] 16-bit K tile converted to float32
  float* vbuf;         // [kKvTile][converted_row_stride(D)]
  float* row;          // [D] temporary
  const float** kptr;  // [kKvTile] float32 row pointers of the current K tile
  const float** vptr;  // [kKvTile]
};

// What one thread's scratch must hold: `wide_tiles` wide sub-tiles (0 when only the narrow
// kernel runs) and float32 K / V tile buffers when K / V are stored in 16 bits.
struct ScratchShape {
  int head_dim = 0;
  int wide_tiles = 0;
  bool convert_kv = false;
};

// Lays out one thread's scratch at `base` (when not null) and returns its size in bytes.
size_t layout_scratch(void* base, const ScratchShape& shape, Scratch* sc);

void run_wide_job(const AttnArgs& a, const TileJob& job, Scratch& sc);
// A narrow job with kv_head >= 0 covers that KV head's rows; with kv_head < 0 (only planned when
// narrow_all_heads_supported), every KV head's rows of the sequence: each K / V row is then read
// for all heads at once, front to back through each block, instead of one head's slice of every
// row per job (which touches every page once per head and defeats the hardware prefetchers).
// Partial outputs of an all-heads job are laid out head after head.
void run_narrow_job(const AttnArgs& a, const TileJob& job, Scratch& sc);
bool narrow_all_heads_supported(const AttnArgs& a);

// Asks for K and V rows j0..j0+n to be brought into L2 while the current tile computes: rows of a
// [tokens, heads, D] tensor are far apart, which the hardware prefetchers do not follow.
inline void prefetch_rows(const char* const* kp, const char* const* vp, int n, int64_t bytes) {
  unsigned touch = 0;
  for (int j = 0; j < n; ++j) {
    const char* k = kp[j];
    const char* v = vp[j];
    // A load per row warms the TLB (a prefetch that misses it may be dropped).
    touch += static_cast<unsigned char>(*k) + static_cast<unsigned char>(*v);
    for (int64_t off = 0; off < bytes; off += 64) {
      __builtin_prefetch(k + off, 0, 2);
      __builtin_prefetch(v + off, 0, 2);
    }
  }
  asm volatile("" : : "r"(touch));
}
inline void prefetch_rows(const KvSource& src, int64_t j0, int n, int head_dim) {
  const char* kp[kKvTile];
  const char* vp[kKvTile];
  src.rows(j0, n, kp, vp);
  prefetch_rows(kp, vp, n, static_cast<int64_t>(head_dim) * static_cast<int64_t>(src.elem));
}

// Row stride (floats) of converted K / V tiles: padded by one cache line so that consecutive
// rows do not map to the same L1 set.
inline int converted_row_stride(int head_dim) { return (head_dim + 15) / 16 * 16 + 16; }

// Fills ptr[0..n) with float32 rows of K (or V) keys j0..j0+n: float32 rows are used in place
// (no copy), 16-bit rows are converted into buf.
inline void gather_rows(const KvSource& src, bool values, int64_t j0, int n, DType dtype,
                        int head_dim, float* buf, const float** ptr) {
  for (int j = 0; j < n; ++j) {
    const char* r = values ? src.v_row(j0 + j) : src.k_row(j0 + j);
    if (dtype == DType::kFloat32) {
      ptr[j] = reinterpret_cast<const float*>(r);
    } else {
      float* dst = buf + static_cast<int64_t>(j) * converted_row_stride(head_dim);
      convert_to_float(r, dtype, dst, head_dim);
      ptr[j] = dst;
    }
  }
}

}  // namespace fastattn::kernels::cpu
