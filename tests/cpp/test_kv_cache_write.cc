// Paged KV-cache writes: every (new dtype, cache dtype) pair, skipped tokens, strided inputs,
// bad slots.
#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "fastattn/core/context.h"
#include "fastattn/kernels/kv_cache_write.h"
#include "kernel_test_util.h"
#include "test_util.h"

using namespace fastattn;
using namespace fastattn::kernels;

namespace {

// The value a float becomes when stored as dt.
float round_to(DType dt, float v) {
  if (dt == DType::kFloat16) return half_to_float(float_to_half(v));
  if (dt == DType::kBFloat16) return bf16_to_float(float_to_bf16(v));
  return v;
}

struct Layout {
  int64_t T = 6, Hk = 3, D = 20, Dv = 12, blocks = 5, block_size = 4;
};

void run_case(DType new_t, DType cache_t, bool fused, int threads, uint32_t seed) {
  const Layout L;
  // K and V of the new tokens; with `fused` they are views into one [T, Hk*D + Hk*Dv + 7] buffer.
  const int64_t row = fused ? L.Hk * L.D + L.Hk * L.Dv + 7 : 0;
  fa_test::FloatData kbuf =
      fa_test::make_float_data(new_t, fused ? L.T * row : L.T * L.Hk * L.D, seed);
  fa_test::FloatData vbuf =
      fa_test::make_float_data(new_t, fused ? 1 : L.T * L.Hk * L.Dv, seed + 1);
  fa_test::FloatData& vsrc = fused ? kbuf : vbuf;
  const int64_t es = static_cast<int64_t>(dtype_size(new_t));
  Tensor k_new = fused ? Tensor(kbuf.data(), new_t, {L.T, L.Hk, L.D}, {row, L.D, 1})
                       : Tensor(kbuf.data(), new_t, {L.T, L.Hk, L.D});
  Tensor v_new = fused ? Tensor(static_cast<char*>(kbuf.data()) + L.Hk * L.D * es, new_t,
                                {L.T, L.Hk, L.Dv}, {row, L.Dv, 1})
                       : Tensor(vbuf.data(), new_t, {L.T, L.Hk, L.Dv});
  auto k_at = [&](int64_t t, int64_t h, int64_t d) {
    return fused ? kbuf.values[t * row + h * L.D + d] : kbuf.values[(t * L.Hk + h) * L.D + d];
  };
  auto v_at = [&](int64_t t, int64_t h, int64_t d) {
    return fused ? vsrc.values[t * row + L.Hk * L.D + h * L.Dv + d]
                 : vbuf.values[(t * L.Hk + h) * L.Dv + d];
  };

  const int64_t slots_total = L.blocks * L.block_size;
  std::vector<uint64_t> kc((slots_total * L.Hk * L.D * 4) / 8 + 1),
      vc((slots_total * L.Hk * L.Dv * 4) / 8 + 1);
  fa_test::poison(kc.data(), cache_t, slots_total * L.Hk * L.D);
  fa_test::poison(vc.data(), cache_t, slots_total * L.Hk * L.Dv);
  Tensor k_cache(kc.data(), cache_t, {L.blocks, L.block_size, L.Hk, L.D});
  Tensor v_cache(vc.data(), cache_t, {L.blocks, L.block_size, L.Hk, L.Dv});

  // Distinct random slots, one token skipped.
  std::vector<int32_t> all(slots_total);
  for (int32_t i = 0; i < slots_total; ++i) all[i] = i;
  std::shuffle(all.begin(), all.end(), std::mt19937(seed));
  std::vector<int32_t> slots(all.begin(), all.begin() + L.T);
  slots[2] = -1;
  kv_cache_write(cpu_context(threads), k_new, v_new, k_cache, v_cache,
                 Tensor(slots.data(), DType::kInt32, {L.T}));

  std::vector<int64_t> token_of(slots_total, -1);
  for (int64_t t = 0; t < L.T; ++t)
    if (slots[t] >= 0) token_of[slots[t]] = t;
  int bad = 0;
  for (int64_t s = 0; s < slots_total; ++s)
    for (int64_t h = 0; h < L.Hk; ++h) {
      for (int64_t d = 0; d < L.D; ++d) {
        const double got = fa_test::read_float(kc.data(), cache_t, (s * L.Hk + h) * L.D + d);
        const int64_t t = token_of[s];
        if (t < 0 ? !std::isnan(got) : got != round_to(cache_t, k_at(t, h, d))) ++bad;
      }
      for (int64_t d = 0; d < L.Dv; ++d) {
        const double got = fa_test::read_float(vc.data(), cache_t, (s * L.Hk + h) * L.Dv + d);
        const int64_t t = token_of[s];
        if (t < 0 ? !std::isnan(got) : got != round_to(cache_t, v_at(t, h, d))) ++bad;
      }
    }
  CHECK_MSG(bad == 0, std::string(dtype_name(new_t)) + " -> " + dtype_name(cache_t) +
                          (fused ? " (fused)" : "") + ": " + std::to_string(bad) + " bad elements");
}

}  // namespace

TEST(write_every_dtype_pair) {
  uint32_t seed = 1;
  for (DType a : fa_test::kFloatTypes)
    for (DType b : fa_test::kFloatTypes) {
      run_case(a, b, false, 1, seed++);
      run_case(a, b, true, 2, seed++);
    }
}

TEST(write_threaded_many_tokens) {
  // Enough tokens to split across threads.
  const int64_t T = 300, Hk = 4, D = 64, blocks = 40, bs = 16;
  std::vector<float> k = fa_test::randn(T * Hk * D, 1), v = fa_test::randn(T * Hk * D, 2);
  std::vector<uint16_t> kc(blocks * bs * Hk * D, 0x7e00), vc(blocks * bs * Hk * D, 0x7e00);
  std::vector<int32_t> slots(T);
  for (int64_t t = 0; t < T; ++t) slots[t] = static_cast<int32_t>(blocks * bs - 1 - 2 * t);
  Tensor kct(kc.data(), DType::kFloat16, {blocks, bs, Hk, D});
  Tensor vct(vc.data(), DType::kFloat16, {blocks, bs, Hk, D});
  kv_cache_write(cpu_context(2), Tensor(k.data(), DType::kFloat32, {T, Hk, D}),
                 Tensor(v.data(), DType::kFloat32, {T, Hk, D}), kct, vct,
                 Tensor(slots.data(), DType::kInt32, {T}));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < Hk * D; ++i) {
      CHECK(kc[slots[t] * Hk * D + i] == float_to_half(k[t * Hk * D + i]));
      CHECK(vc[slots[t] * Hk * D + i] == float_to_half(v[t * Hk * D + i]));
    }
}

TEST(bad_slots_and_shapes) {
  const int64_t T = 4, Hk = 2, D = 8, blocks = 10, bs = 16;
  std::vector<float> k(T * Hk * D, 1.0f), v(T * Hk * D, 2.0f);
  std::vector<float> kc(blocks * bs * Hk * D, fa_test::kPoison),
      vc(blocks * bs * Hk * D, fa_test::kPoison);
  std::vector<int32_t> slots = {0, 5, 17, 999};
  const Context ctx = cpu_context();
  Tensor kt(k.data(), DType::kFloat32, {T, Hk, D}), vt(v.data(), DType::kFloat32, {T, Hk, D});
  Tensor kct(kc.data(), DType::kFloat32, {blocks, bs, Hk, D});
  Tensor vct(vc.data(), DType::kFloat32, {blocks, bs, Hk, D});
  Tensor st(slots.data(), DType::kInt32, {T});
  CHECK_THROWS(
      kv_cache_write(ctx, kt, vt, kct, vct, st), InvalidArgument,
      "slot_mapping: slot 999 at position 3 is out of range for a cache of 10 blocks x 16 slots");
  for (float x : kc) CHECK(std::isnan(x));  // nothing written on error
  slots[3] = -2;
  CHECK_THROWS(kv_cache_write(ctx, kt, vt, kct, vct, st), InvalidArgument, "slot -2 at position 3");
  slots[3] = 100;
  std::vector<int64_t> slots64(T, 0);
  CHECK_THROWS(kv_cache_write(ctx, kt, vt, kct, vct, Tensor(slots64.data(), DType::kInt64, {T})),
               InvalidArgument, "slot_mapping: expected dtype int32");
  CHECK_THROWS(kv_cache_write(ctx, kt, vt, kct, vct, Tensor(slots.data(), DType::kInt32, {3})),
               InvalidArgument, "slot_mapping: expected shape [4]");
  Tensor vct_bad(vc.data(), DType::kFloat32, {blocks, bs, Hk + 1, D});
  CHECK_THROWS(kv_cache_write(ctx, kt, vt, kct, vct_bad, st), InvalidArgument,
               "v_cache: expected shape");
  Tensor kct_bad(kc.data(), DType::kFloat32, {blocks, bs, Hk, D / 2});
  CHECK_THROWS(kv_cache_write(ctx, kt, vt, kct_bad, vct, st), InvalidArgument,
               "k_cache: expected shape");
  Tensor vt_bad(v.data(), DType::kFloat32, {T - 1, Hk, D});
  CHECK_THROWS(kv_cache_write(ctx, kt, vt_bad, kct, vct, st), InvalidArgument,
               "v_new: expected shape");
  Tensor kt_int(k.data(), DType::kInt32, {T, Hk, D});
  CHECK_THROWS(kv_cache_write(ctx, kt_int, vt, kct, vct, st), InvalidArgument,
               "k_new: expected a float32");
  Tensor kct_cuda = fa_test::on_cuda(kct);
  CHECK_THROWS(kv_cache_write(ctx, kt, vt, kct_cuda, vct, st), InvalidArgument,
               "k_cache: expected a CPU tensor");
  kv_cache_write(ctx, kt, vt, kct, vct, st);  // the good call works
  CHECK(kc[100 * Hk * D] == 1.0f && vc[100 * Hk * D] == 2.0f);
}

TEST_MAIN()
