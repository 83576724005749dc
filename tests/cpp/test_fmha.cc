// fmha_forward on the CPU against a float64 reference. Rule (flash-attention's): the kernel's max
// error is at most twice that of a straightforward implementation in the same storage precision,
// plus a small absolute floor (float32 outputs are otherwise held to float32 rounding noise).
#include <cstdio>

#include "fmha_test_util.h"

using fastattn::Context;
using fastattn::Device;
using fastattn::DeviceType;
using fastattn::DType;
using fastattn::Error;
using fastattn::InvalidArgument;
using fastattn::Tensor;
using fastattn::kernels::fmha_forward;
using fastattn::kernels::FmhaParams;
using fmha_test::Problem;
using fmha_test::Result;
using fmha_test::Spec;

namespace {

constexpr double kOutFloor = 2e-6;  // absolute floor on top of 2x the naive error
constexpr double kLseFloor = 2e-6;

const char* dt_name(DType d) { return fastattn::dtype_name(d); }

Result expect_accurate(const Spec& s, const char* what) {
  Problem p(s);
  Result r = p.run();
  char info[512];
  std::snprintf(info, sizeof info,
                "%s [D=%d Hq=%d Hk=%d q=%s kv=%s out=%s causal=%d win=(%d,%d) alibi=%d paged=%d]: "
                "err %.3g (naive %.3g), lse err %.3g (naive %.3g)",
                what, s.d, s.hq, s.hk, dt_name(s.q_dtype), dt_name(s.kv_dtype),
                dt_name(s.out_dtype), s.causal, s.wl, s.wr, s.alibi, s.block_size, r.err,
                r.naive_err, r.lse_err, r.naive_lse_err);
  std::printf("  %s\n", info);
  CHECK_MSG(r.all_finite, std::string(info) + ": NaN / inf left in out or lse");
  CHECK_MSG(r.empty_rows_ok, std::string(info) + ": a row with no visible key is not 0 / -inf");
  CHECK_MSG(r.padding_untouched, std::string(info) + ": out padding was written");
  CHECK_MSG(r.err <= 2 * r.naive_err + kOutFloor, std::string(info) + ": output error too large");
  CHECK_MSG(r.lse_err <= 2 * r.naive_lse_err + kLseFloor,
            std::string(info) + ": lse error too large");
  return r;
}

Spec square(int s, int hq, int hk, int d) {
  Spec sp;
  sp.sq = {s};
  sp.sk = {s};
  sp.hq = hq, sp.hk = hk, sp.d = d;
  return sp;
}

}  // namespace

TEST(fmha_head_dims_fp32) {
  for (int d : {64, 80, 128}) {
    Spec s = square(150, 2, 2, d);
    s.seed = 10 + d;
    expect_accurate(s, "dense");
    s.causal = true;
    expect_accurate(s, "causal");
  }
}

TEST(fmha_odd_head_dims) {
  for (int d : {1, 7, 33, 200, 256}) {
    Spec s = square(70, 2, 1, d);
    s.causal = d % 2 == 1;
    s.seed = 20 + d;
    expect_accurate(s, "odd head dim");
    Spec dec;  // decode (narrow kernel) with the same head dim
    dec.sq = {1, 2};
    dec.sk = {90, 300};
    dec.hq = 2, dec.hk = 2, dec.d = d, dec.seed = 30 + d;
    expect_accurate(dec, "odd head dim decode");
  }
}

TEST(fmha_storage_dtypes) {
  for (DType dt : {DType::kFloat16, DType::kBFloat16}) {
    for (int d : {64, 80, 128}) {
      Spec s = square(130, 4, 2, d);
      s.q_dtype = s.kv_dtype = s.out_dtype = dt;
      s.causal = d != 80;
      s.seed = 40 + d;
      expect_accurate(s, "16-bit");
    }
  }
  Spec mixed = square(100, 2, 2, 128);
  mixed.q_dtype = DType::kFloat32, mixed.kv_dtype = DType::kBFloat16,
  mixed.out_dtype = DType::kFloat16;
  expect_accurate(mixed, "mixed dtypes");
  mixed.q_dtype = DType::kFloat16, mixed.kv_dtype = DType::kFloat32,
  mixed.out_dtype = DType::kFloat32;
  expect_accurate(mixed, "mixed dtypes");
}

TEST(fmha_causal_bottom_right) {
  Spec s;
  s.hq = 2, s.hk = 2, s.d = 64, s.causal = true;
  s.sq = {37}, s.sk = {200};  // chunked prefill: queries are the last 37 positions
  expect_accurate(s, "causal sq < sk");
  s.sq = {90}, s.sk = {40};  // more queries than keys: the first 50 rows see nothing
  expect_accurate(s, "causal sq > sk");
}

TEST(fmha_sliding_window) {
  Spec s = square(300, 2, 2, 64);
  s.wl = 32, s.wr = 0;
  expect_accurate(s, "window (32, 0)");
  s.wl = 16, s.wr = 16;
  expect_accurate(s, "window (16, 16)");
  s.wl = -1, s.wr = 5;
  expect_accurate(s, "window (-1, 5)");
  s.causal = true, s.wl = 100, s.wr = -1;
  s.sq = {120}, s.sk = {400};
  expect_accurate(s, "causal + window left 100, sq < sk");
  s.causal = false, s.wl = 0, s.wr = 0;
  s.sq = {50}, s.sk = {30};  // a one-key window; rows before the keys start see nothing
  expect_accurate(s, "window (0, 0), sq > sk");
}

TEST(fmha_alibi) {
  Spec s = square(140, 4, 4, 64);
  s.alibi = 1;
  expect_accurate(s, "alibi [Hq]");
  s.causal = true;
  s.sq = {3, 77}, s.sk = {50, 160};
  s.alibi = 2;
  expect_accurate(s, "alibi [B, Hq] causal");
  s.sq = {1, 1}, s.sk = {500, 33};
  expect_accurate(s, "alibi decode");
}

TEST(fmha_gqa_mqa) {
  Spec s = square(130, 8, 2, 128);  // Hq / Hk = 4
  s.causal = true;
  expect_accurate(s, "gqa 4");
  s.hk = 1;  // MQA
  expect_accurate(s, "mqa");
  s.hq = 32, s.hk = 2, s.sq = {5}, s.sk = {700};  // 16 heads per group, few tokens
  expect_accurate(s, "gqa 16, sq 5");
  s.hq = 80, s.hk = 1, s.sq = {3}, s.sk = {90};  // a group wider than one tile
  expect_accurate(s, "mqa 80 heads");
}

TEST(fmha_varlen) {
  Spec s;
  s.hq = 4, s.hk = 2, s.d = 80;
  s.sq = {1, 7, 129, 0, 64, 33};
  s.sk = {1, 7, 129, 5, 200, 33};
  expect_accurate(s, "varlen dense");
  s.causal = true;
  s.alibi = 2;
  expect_accurate(s, "varlen causal alibi");
  s.q_dtype = s.kv_dtype = s.out_dtype = DType::kBFloat16;
  s.alibi = 0;
  expect_accurate(s, "varlen causal bf16");
}

TEST(fmha_paged) {
  for (int bs : {16, 64}) {
    Spec s;
    s.hq = 4, s.hk = 2, s.d = 64, s.block_size = bs, s.causal = true;
    s.sq = {1, 1, 20, 129};
    s.sk = {1, 150, 20, 300};
    s.seed = 50 + bs;
    expect_accurate(s, "paged mixed");
    s.sq = {1, 1, 1};
    s.sk = {700, 64, 3};
    s.q_dtype = s.kv_dtype = s.out_dtype = DType::kFloat16;
    expect_accurate(s, "paged decode fp16");
    s.hq = 8, s.hk = 8, s.d = 128;
    s.q_dtype = s.kv_dtype = s.out_dtype = DType::kFloat32;
    s.wl = 100;
    expect_accurate(s, "paged decode window");
  }
}

TEST(fmha_fused_qkv_and_strided_out) {
  Spec s;
  s.hq = 4, s.hk = 2, s.d = 64, s.causal = true;
  s.sq = {70, 19};
  s.sk = {70, 19};
  s.fused_qkv = true;
  s.padded_out = true;
  expect_accurate(s, "fused qkv fp32");
  s.q_dtype = s.kv_dtype = DType::kFloat16;
  expect_accurate(s, "fused qkv fp16");
}

TEST(fmha_decode_split_kv) {
  // One (sequence, KV head) and 8 threads: far fewer tiles than threads, so the key range is
  // split and the partial results are merged by log-sum-exp.
  Spec s;
  s.hq = 2, s.hk = 1, s.d = 128, s.threads = 8;
  s.sq = {1};
  s.sk = {3000};
  expect_accurate(s, "split-kv narrow");
  s.alibi = 1, s.causal = true, s.wl = 1000;
  expect_accurate(s, "split-kv window alibi");
  s.alibi = 0, s.wl = -1;
  s.hq = 16, s.sq = {2};  // 32 rows: the wide kernel, split
  expect_accurate(s, "split-kv wide");
  s.hq = 4, s.sq = {1}, s.sk = {2000}, s.block_size = 16;
  s.q_dtype = s.kv_dtype = s.out_dtype = DType::kBFloat16;
  expect_accurate(s, "split-kv paged bf16");
  // Split and unsplit runs agree closely: two (sequence, KV head) tiles do not split on one
  // thread (2 tiles >= 2 x 1 thread) but do on eight.
  Spec u;
  u.hq = 2, u.hk = 2, u.d = 64, u.sq = {1}, u.sk = {2500}, u.seed = 77;
  Problem p(u);
  const Result whole = p.run(1);
  const Result split = p.run(8);
  double diff = 0;
  for (size_t i = 0; i < whole.out.size(); ++i)
    diff = std::max(diff, double(std::fabs(whole.out[i] - split.out[i])));
  CHECK_MSG(
      whole.err <= 2 * whole.naive_err + kOutFloor && split.err <= 2 * split.naive_err + kOutFloor,
      "split / unsplit decode error too large");
  CHECK_MSG(diff < 1e-6, "split-kv result differs from the unsplit one by " + std::to_string(diff));
}

TEST(fmha_host_part_decode) {
  // The host part of a spilled step: decode (and 2-token chunk) queries against a paged cache,
  // without a mask, as AttentionLayer::attend_host_part runs it; fp16 / bf16 / fp32 KV, GQA
  // groups 1 / 4 / 8 (the narrow kernel's all-heads jobs and its 8-row tiles), block sizes
  // 16..256, lengths 1..64K, 1..3 threads (split-KV merges with all-heads slots).
  const DType dts[] = {DType::kFloat16, DType::kBFloat16, DType::kFloat32};
  uint32_t seed = 900;
  for (DType dt : dts) {
    for (int group : {1, 4, 8}) {
      for (int bs : {16, 64, 256}) {
        Spec s;
        s.hk = group == 8 ? 1 : 2, s.hq = s.hk * group, s.d = 128, s.block_size = bs;
        s.q_dtype = s.kv_dtype = s.out_dtype = dt;
        s.sq = {1, 1, 1};
        s.sk = {1, 17, 300 + bs};
        s.threads = 1 + (bs / 16) % 3;
        s.seed = ++seed;
        expect_accurate(s, "host part decode");
        if (group <= 4) {  // 2 query tokens x group <= 8 rows: still the narrow kernel
          s.sq = {2, 1};
          s.sk = {2, 1000};
          s.causal = true;
          s.seed = ++seed;
          expect_accurate(s, "host part chunk");
        }
      }
    }
  }
  // Long contexts, few heads: 64K keys split over the threads, and a head dim of 64.
  for (DType dt : {DType::kFloat16, DType::kBFloat16}) {
    Spec s;
    s.hq = 8, s.hk = 1, s.d = 64, s.block_size = 16;
    s.q_dtype = s.kv_dtype = s.out_dtype = dt;
    s.sq = {1};
    s.sk = {65536};
    s.threads = 2;
    s.seed = ++seed;
    expect_accurate(s, "host part 64K");
    s.hq = 8, s.hk = 2, s.block_size = 256, s.sk = {20000};
    s.threads = 3;
    s.seed = ++seed;
    expect_accurate(s, "host part 20K GQA 4");
  }
}

TEST(fmha_thread_count_is_deterministic) {
  // Without split-KV every row is computed by one tile job: any thread count gives the same bits.
  Spec s = square(260, 8, 2, 64);
  s.causal = true;
  Problem p(s);
  const Result a = p.run(1);
  const Result b = p.run(2);
  const Result c = p.run(3);
  CHECK(a.out == b.out);
  CHECK(a.out == c.out);
}

TEST(fmha_softmax_scale) {
  Spec s = square(90, 2, 2, 64);
  s.scale = 0.3f;
  expect_accurate(s, "scale 0.3");
}

// ---- bad input ----

namespace {

struct Bad {
  std::vector<float> q, k, v, out, lse;
  std::vector<int32_t> cu_q{0, 6, 12}, cu_k{0, 5, 10};
  FmhaParams p;
  Bad()
      : q(12 * 4 * 16, 0.5f),
        k(10 * 2 * 16, 0.25f),
        v(10 * 2 * 16, 1.0f),
        out(12 * 4 * 16),
        lse(4 * 12) {
    p.q = Tensor(q.data(), DType::kFloat32, {12, 4, 16});
    p.k = Tensor(k.data(), DType::kFloat32, {10, 2, 16});
    p.v = Tensor(v.data(), DType::kFloat32, {10, 2, 16});
    p.out = Tensor(out.data(), DType::kFloat32, {12, 4, 16});
    p.lse = Tensor(lse.data(), DType::kFloat32, {4, 12});
    p.cu_seqlens_q = Tensor(cu_q.data(), DType::kInt32, {3});
    p.cu_seqlens_k = Tensor(cu_k.data(), DType::kInt32, {3});
  }
};

void run_bad(const FmhaParams& p) { fmha_forward(fastattn::cpu_context(1), p); }

}  // namespace

TEST(fmha_bad_input) {
  {
    Bad b;  // the fixture itself is valid
    run_bad(b.p);
    CHECK(std::isfinite(b.out[0]) && std::isfinite(b.lse[0]));
  }
  {
    Bad b;
    b.p.k = Tensor(b.k.data(), DType::kFloat32, {10, 32});
    CHECK_THROWS(run_bad(b.p), InvalidArgument, "k: expected 3 dimensions");
  }
  {
    Bad b;
    b.p.q = Tensor(b.q.data(), DType::kFloat32, {12, 4, 4, 4});
    CHECK_THROWS(run_bad(b.p), InvalidArgument, "q: expected 3 dimensions");
  }
  {
    Bad b;
    b.cu_q = {0, 6, 10};
    CHECK_THROWS(run_bad(b.p), InvalidArgument, "cu_seqlens_q: last entry 10 != q rows 12");
  }
  {
    Bad b;
    b.cu_k = {0, 7, 5};
    CHECK_THROWS(run_bad(b.p), InvalidArgument, "cu_seqlens_k: entries must not decrease");
  }
  {
    Bad b;
    b.cu_k = {1, 5, 10};
    CHECK_THROWS(run_bad(b.p), InvalidArgument, "cu_seqlens_k: first entry 1 != 0");
  }
  {
    Bad b;
    b.p.k = Tensor(b.k.data(), DType::kFloat32, {10, 4, 8});
    b.p.v = Tensor(b.v.data(), DType::kFloat32, {10, 4, 8});
    CHECK_THROWS(run_bad(b.p), InvalidArgument, "head dims of q (16), k (8) and v (8) differ");
  }
  {
    Bad b;
    b.p.v = Tensor(b.v.data(), DType::kFloat32, {10, 4, 8});
    CHECK_THROWS(run_bad(b.p), InvalidArgument, "v: expected the shape of k");
  }
  {
    Bad b;
    b.p.k = Tensor(b.k.data(), DType::kFloat32, {10, 3, 16}, {32, 16, 1});
    b.p.v = Tensor(b.v.data(), DType::kFloat32, {10, 3, 16}, {32, 16, 1});
    CHECK_THROWS(run_bad(b.p), InvalidArgument, "q has 4 heads, not a multiple of the 3 KV heads");
  }
  {
    std::vector<float> big(2 * 1 * 300);
    Bad b;
    b.cu_q = {0, 1, 2};
    b.cu_k = {0, 1, 2};
    b.p.q = Tensor(big.data(), DType::kFloat32, {2, 1, 300});
    b.p.k = Tensor(big.data(), DType::kFloat32, {2, 1, 300});
    b.p.v = Tensor(big.data(), DType::kFloat32, {2, 1, 300});
    b.p.out = Tensor(big.data(), DType::kFloat32, {2, 1, 300});
    b.p.lse = Tensor();
    CHECK_THROWS(run_bad(b.p), InvalidArgument, "q: head dim 300 is unsupported");
  }
  {
    Bad b;
    b.p.out = Tensor(b.out.data(), DType::kFloat32, {12, 2, 16});
    CHECK_THROWS(run_bad(b.p), InvalidArgument, "out: expected shape [12, 4, 16]");
  }
  {
    Bad b;
    b.p.lse = Tensor(b.lse.data(), DType::kFloat32, {12, 4});
    CHECK_THROWS(run_bad(b.p), InvalidArgument, "lse: expected shape [4, 12]");
  }
  {
    Bad b;
    b.p.v = Tensor(b.v.data(), DType::kFloat16, {10, 2, 16});
    CHECK_THROWS(run_bad(b.p), InvalidArgument, "k and v must have the same dtype");
  }
  {
    Bad b;
    b.p.q = Tensor(b.q.data(), DType::kInt32, {12, 4, 16});
    CHECK_THROWS(run_bad(b.p), InvalidArgument, "q: expected a float32, float16 or bfloat16");
  }
  {
    Bad b;
    b.p.q = Tensor(b.q.data(), DType::kFloat32, {12, 4, 16}, {64, 1, 4});
    CHECK_THROWS(run_bad(b.p), InvalidArgument,
                 "q: the last (head dim) dimension must be contiguous");
  }
  {
    Bad b;
    b.p.cu_seqlens_k = Tensor();
    CHECK_THROWS(run_bad(b.p), InvalidArgument, "cu_seqlens_k: expected a tensor");
  }
  {
    Bad b;
    b.p.cu_seqlens_q = Tensor(b.cu_q.data(), DType::kInt64, {1});
    CHECK_THROWS(run_bad(b.p), InvalidArgument, "cu_seqlens_q: expected dtype int32");
  }
  {
    Bad b;
    std::vector<float> slopes(8);
    b.p.alibi_slopes = Tensor(slopes.data(), DType::kFloat32, {8});
    CHECK_THROWS(run_bad(b.p), InvalidArgument, "alibi_slopes: expected shape [4] or [2, 4]");
  }
  {
    Bad b;
    b.p.window_left = -2;
    CHECK_THROWS(run_bad(b.p), InvalidArgument, "window_left: expected >= -1");
    b.p.window_left = 3, b.p.window_right = -5;
    CHECK_THROWS(run_bad(b.p), InvalidArgument, "window_right: expected >= -1");
  }
  {
    Bad b;
    b.p.softmax_scale = -1.0f;
    CHECK_THROWS(run_bad(b.p), InvalidArgument, "softmax_scale: expected a finite value >= 0");
  }
  {
    Bad b;  // block_table with contiguous KV
    std::vector<int32_t> table(2, 0);
    b.p.block_table = Tensor(table.data(), DType::kInt32, {2, 1});
    CHECK_THROWS(run_bad(b.p), InvalidArgument, "block_table: must not be given");
  }
  {
    Bad b;  // a CUDA tensor in a CPU-only build
    b.p.q = Tensor(b.q.data(), DType::kFloat32, {12, 4, 16}, Device{DeviceType::kCUDA, 0});
    CHECK_THROWS(run_bad(b.p), Error, "q is on cuda:0 but FastAttention was not built with CUDA");
    b.p.k = Tensor(b.k.data(), DType::kFloat32, {10, 2, 16}, Device{DeviceType::kCUDA, 0});
    b.p.v = Tensor(b.v.data(), DType::kFloat32, {10, 2, 16}, Device{DeviceType::kCUDA, 0});
    b.p.out = Tensor(b.out.data(), DType::kFloat32, {12, 4, 16}, Device{DeviceType::kCUDA, 0});
    b.p.lse = Tensor(b.lse.data(), DType::kFloat32, {4, 12}, Device{DeviceType::kCUDA, 0});
    b.p.cu_seqlens_q = Tensor(b.cu_q.data(), DType::kInt32, {3}, Device{DeviceType::kCUDA, 0});
    b.p.cu_seqlens_k = Tensor(b.cu_k.data(), DType::kInt32, {3}, Device{DeviceType::kCUDA, 0});
    CHECK_THROWS(run_bad(b.p), Error, "not built with CUDA");
  }
  {
    Bad b;  // pinned host memory is CPU memory: fine for the CPU kernel
    b.p.out = Tensor(b.out.data(), DType::kFloat32, {12, 4, 16}, Device{DeviceType::kCUDAHost, 0});
    run_bad(b.p);
    CHECK(std::isfinite(b.out[5]));
  }
}

TEST(fmha_bad_paged_input) {
  // 2 sequences, paged KV with 4 blocks of 8 keys; table [2, 2].
  std::vector<float> q(3 * 2 * 16, 0.1f), kv(4 * 8 * 1 * 16, 0.2f), out(3 * 2 * 16);
  std::vector<int32_t> cu_q{0, 1, 3}, seqlens{10, 16}, table{0, 1, 2, 3}, cu_k{0, 10, 26};
  FmhaParams p;
  p.q = Tensor(q.data(), DType::kFloat32, {3, 2, 16});
  p.k = Tensor(kv.data(), DType::kFloat32, {4, 8, 1, 16});
  p.v = p.k;
  p.out = Tensor(out.data(), DType::kFloat32, {3, 2, 16});
  p.cu_seqlens_q = Tensor(cu_q.data(), DType::kInt32, {3});
  p.block_table = Tensor(table.data(), DType::kInt32, {2, 2});
  p.seqlens_k = Tensor(seqlens.data(), DType::kInt32, {2});
  run_bad(p);  // valid
  CHECK(std::isfinite(out[0]));
  table[3] = 9;
  CHECK_THROWS(run_bad(p), InvalidArgument,
               "block_table[1][1] = 9 is out of range: k / v hold 4 blocks");
  table[3] = 3;
  seqlens[1] = 17;
  CHECK_THROWS(run_bad(p), InvalidArgument,
               "seqlens_k[1] = 17 exceeds the block table capacity of 2 blocks x 8 = 16 keys");
  seqlens[1] = -1;
  CHECK_THROWS(run_bad(p), InvalidArgument, "seqlens_k[1] = -1 is negative");
  seqlens[1] = 16;
  p.cu_seqlens_k = Tensor(cu_k.data(), DType::kInt32, {3});
  CHECK_THROWS(run_bad(p), InvalidArgument, "cu_seqlens_k: must not be given with paged k / v");
  p.cu_seqlens_k = Tensor();
  p.seqlens_k = Tensor();
  CHECK_THROWS(run_bad(p), InvalidArgument, "seqlens_k: expected a tensor");
}

TEST_MAIN()
