// Argument checks and launch of the CUDA embedding lookup (embedding_kernels.cu).
#include "fastattn/kernels/cuda/embedding_cuda.h"

#include <limits>

#include "fastattn/core/cuda/cuda_check.h"
#include "fastattn/kernels/cuda/embedding_launch.h"
#include "fastattn/kernels/cuda/launch_checks.h"
#include "fastattn/kernels/embedding.h"

namespace fastattn::kernels::cuda {

void embedding_lookup_cuda(const Context& ctx, const Tensor& ids, const Tensor& table, Tensor& out,
                           int64_t vocab_start, bool vocab_parallel) {
  // vocab_parallel changes nothing on the GPU: every id outside the table's rows gives a zero
  // row in both modes (the values of ids are not read on the host).
  (void)vocab_parallel;
  check_same_device(table, "table", ids, "ids");
  check_same_device(out, "out", ids, "ids");
  check_embedding_inputs(ids, table);
  FA_CHECK(out.dtype() == table.dtype() || out.dtype() == DType::kFloat32,
           "out: expected the table's dtype (", dtype_name(table.dtype()), ") or float32, got ",
           out.describe());
  const int64_t T = ids.size(0), H = table.size(1), V = table.size(0);
  check_shape(out, "out", {T, H});
  check_last_dim_contiguous(out, "out");
  FA_CHECK(vocab_start >= 0, "embedding: vocab_start must be >= 0, got ", vocab_start);
  FA_CHECK(T <= std::numeric_limits<int32_t>::max(), "ids: ", T,
           " tokens exceed the CUDA grid limit");
  if (T == 0 || H == 0) return;

  EmbeddingLaunch L;
  L.ids = ids.data();
  L.id_type = ids.dtype();
  L.table = table.data();
  L.table_type = table.dtype();
  L.ldt = V <= 1 ? H : table.stride(0);
  L.vocab = V;
  L.out = out.data();
  L.out_type = out.dtype();
  L.ldo = T <= 1 ? H : out.stride(0);
  FA_CHECK(L.ldo >= H, "out: row stride ", out.stride(0), " is smaller than its row length ", H);
  L.tokens = T;
  L.cols = H;
  L.vocab_start = vocab_start;
  const int vec = vec16(table.dtype());
  L.vec = vector_ok(L.table, L.ldt, H, dtype_size(L.table_type), vec) &&
                  vector_ok(L.out, L.ldo, H, dtype_size(L.out_type), vec)
              ? vec
              : 1;
  const DeviceGuard device(ids.device().index);
  launch_embedding(L, stream_of(ctx));
  FA_CUDA_CHECK_LAUNCH("embedding_kernel");
}

}  // namespace fastattn::kernels::cuda
