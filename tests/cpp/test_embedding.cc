// Embedding lookup: every table dtype and id type, tensor-parallel shards, bad ids.
#include <string>
#include <vector>

#include "fastattn/core/context.h"
#include "fastattn/kernels/embedding.h"
#include "kernel_test_util.h"
#include "test_util.h"

using namespace fastattn;
using namespace fastattn::kernels;

TEST(lookup_every_dtype_and_id_type) {
  const int64_t V = 50, H = 37, T = 9;
  for (DType dt : fa_test::kFloatTypes) {
    fa_test::FloatData table = fa_test::make_float_data(dt, V * H, 3);
    for (DType it : {DType::kInt32, DType::kInt64}) {
      std::vector<int64_t> ids64 = {0, 49, 7, 7, 13, 2, 48, 1, 25};
      std::vector<int32_t> ids32(ids64.begin(), ids64.end());
      Tensor ids =
          it == DType::kInt32 ? Tensor(ids32.data(), it, {T}) : Tensor(ids64.data(), it, {T});
      const int64_t ld = H + 3;  // padded output rows
      std::vector<float> out(T * ld, fa_test::kPoison);
      Tensor ot(out.data(), DType::kFloat32, {T, H}, {ld, 1});
      embedding_lookup(cpu_context(), ids, Tensor(table.data(), dt, {V, H}), ot);
      for (int64_t t = 0; t < T; ++t)
        for (int64_t h = 0; h < ld; ++h) {
          if (h < H)
            CHECK(out[t * ld + h] == table.values[ids64[t] * H + h]);  // exact widening
          else
            CHECK(std::isnan(out[t * ld + h]));
        }
    }
  }
}

TEST(lookup_threaded_large_batch) {
  const int64_t V = 300, H = 768, T = 100;
  fa_test::FloatData table = fa_test::make_float_data(DType::kBFloat16, V * H, 4);
  std::vector<int32_t> ids(T);
  for (int64_t t = 0; t < T; ++t) ids[t] = static_cast<int32_t>((t * 37) % V);
  std::vector<float> out(T * H, fa_test::kPoison);
  Tensor ot(out.data(), DType::kFloat32, {T, H});
  embedding_lookup(cpu_context(2), Tensor(ids.data(), DType::kInt32, {T}),
                   Tensor(table.data(), DType::kBFloat16, {V, H}), ot);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t h = 0; h < H; ++h) CHECK(out[t * H + h] == table.values[ids[t] * H + h]);
}

TEST(vocab_parallel_shard_gives_zero_rows_outside) {
  // The shard holds ids [100, 200) of a 300-token vocabulary.
  const int64_t V = 100, H = 16, start = 100;
  fa_test::FloatData table = fa_test::make_float_data(DType::kFloat16, V * H, 5);
  std::vector<int64_t> ids = {0, 100, 150, 199, 200, 299, 120};
  const int64_t T = static_cast<int64_t>(ids.size());
  std::vector<float> out(T * H, fa_test::kPoison);
  Tensor ot(out.data(), DType::kFloat32, {T, H});
  embedding_lookup(cpu_context(), Tensor(ids.data(), DType::kInt64, {T}),
                   Tensor(table.data(), DType::kFloat16, {V, H}), ot, start, true);
  for (int64_t t = 0; t < T; ++t) {
    const bool mine = ids[t] >= start && ids[t] < start + V;
    for (int64_t h = 0; h < H; ++h)
      CHECK(out[t * H + h] == (mine ? table.values[(ids[t] - start) * H + h] : 0.0f));
  }
}

TEST(bad_ids_and_shapes) {
  const int64_t V = 32000, H = 4;
  std::vector<float> table(V * H, 1.0f), out(5 * H, fa_test::kPoison);
  std::vector<int32_t> ids = {1, 2, 3, 40000, 5};
  const Context ctx = cpu_context();
  Tensor tt(table.data(), DType::kFloat32, {V, H});
  Tensor ot(out.data(), DType::kFloat32, {5, H});
  CHECK_THROWS(embedding_lookup(ctx, Tensor(ids.data(), DType::kInt32, {5}), tt, ot),
               InvalidArgument,
               "token id 40000 at position 3 is out of range for a vocabulary of 32000");
  for (float v : out) CHECK(std::isnan(v));  // nothing written on error
  ids[3] = -1;
  CHECK_THROWS(embedding_lookup(ctx, Tensor(ids.data(), DType::kInt32, {5}), tt, ot),
               InvalidArgument, "token id -1 at position 3 is negative");
  ids[3] = 4;
  Tensor idt(ids.data(), DType::kInt32, {5});
  Tensor o_bad(out.data(), DType::kFloat32, {5, 3});
  CHECK_THROWS(embedding_lookup(ctx, idt, tt, o_bad), InvalidArgument,
               "out: expected shape [5, 4]");
  CHECK_THROWS(embedding_lookup(ctx, Tensor(table.data(), DType::kFloat32, {5}), tt, ot),
               InvalidArgument, "ids: expected int32 or int64");
  CHECK_THROWS(embedding_lookup(ctx, idt, Tensor(ids.data(), DType::kInt32, {5, 1}), ot),
               InvalidArgument, "table: expected a float32, float16 or bfloat16");
  CHECK_THROWS(embedding_lookup(ctx, idt, fa_test::on_cuda(tt), ot), InvalidArgument,
               "table: expected a CPU tensor");
  embedding_lookup(ctx, idt, tt, ot);  // the good call works
  for (float v : out) CHECK(v == 1.0f);
}

TEST_MAIN()
