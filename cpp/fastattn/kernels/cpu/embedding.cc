// Token embedding lookup: rows of a float32 / float16 / bfloat16 table widened into float32.
#include <cstring>

#include "fastattn/kernels/cpu/cpu_util.h"
#include "fastattn/kernels/cpu/embedding_cpu.h"
#include "fastattn/kernels/embedding.h"

namespace fastattn::kernels {
namespace {

template <typename I>
void lookup(const Context& ctx, const I* ids, const Tensor& table, Tensor& out, int64_t vocab_start,
            bool vocab_parallel) {
  const int64_t T = out.size(0), H = out.size(1), V = table.size(0);
  // Check every id before writing anything, so a bad id leaves out untouched.
  for (int64_t t = 0; t < T; ++t) {
    const int64_t id = static_cast<int64_t>(ids[t]);
    FA_CHECK(id >= 0, "token id ", id, " at position ", t, " is negative");
    FA_CHECK(vocab_parallel || (id >= vocab_start && id < vocab_start + V), "token id ", id,
             " at position ", t, " is out of range for a vocabulary of ", V,
             vocab_start != 0 ? " (rows starting at id " + std::to_string(vocab_start) + ")" : "");
  }
  const char* tab = static_cast<const char*>(table.data());
  const size_t row_bytes = static_cast<size_t>(table.stride(0)) * dtype_size(table.dtype());
  float* op = out.data_as<float>();
  const int64_t ldo = out.stride(0);
  const int threads = cpu::threads_for(ctx, T * H);
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t t = 0; t < T; ++t) {
    const int64_t row = static_cast<int64_t>(ids[t]) - vocab_start;
    float* o = op + t * ldo;
    if (row < 0 || row >= V) {  // another shard's token (vocab_parallel only)
      std::memset(o, 0, static_cast<size_t>(H) * sizeof(float));
      continue;
    }
    convert_to_float(tab + static_cast<size_t>(row) * row_bytes, table.dtype(), o, H);
  }
}

}  // namespace

void check_embedding_inputs(const Tensor& ids, const Tensor& table) {
  FA_CHECK(ids.dtype() == DType::kInt32 || ids.dtype() == DType::kInt64,
           "ids: expected int32 or int64, got ", ids.describe());
  check_dim(ids, "ids", 1);
  check_contiguous(ids, "ids");
  check_floating(table, "table");
  check_dim(table, "table", 2);
  check_last_dim_contiguous(table, "table");
}

void cpu::embedding_lookup_cpu(const Context& ctx, const Tensor& ids, const Tensor& table,
                               Tensor& out, int64_t vocab_start, bool vocab_parallel) {
  check_cpu(ids, "ids");
  check_cpu(table, "table");
  check_cpu(out, "out");
  check_embedding_inputs(ids, table);
  check_dtype(out, "out", DType::kFloat32);
  check_shape(out, "out", {ids.size(0), table.size(1)});
  check_last_dim_contiguous(out, "out");
  FA_CHECK(vocab_start >= 0, "embedding: vocab_start must be >= 0, got ", vocab_start);
  if (ids.dtype() == DType::kInt32)
    lookup(ctx, ids.data_as<const int32_t>(), table, out, vocab_start, vocab_parallel);
  else
    lookup(ctx, ids.data_as<const int64_t>(), table, out, vocab_start, vocab_parallel);
}

}  // namespace fastattn::kernels
