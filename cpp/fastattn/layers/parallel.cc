#include "fastattn/layers/parallel.h"

#include <vector>

#include "fastattn/core/error.h"
#include "fastattn/kernels/gemm.h"

namespace fastattn::layers {
namespace {

[[noreturn]] void no_tensor_parallel(const char* what) {
  FA_THROW_AS(InvalidArgument, what, ": tensor parallelism needs `mpirun` with one process per ",
              "rank and is not available in this build yet");
}

// y[t, :] += bias (float32 y, any float bias).
void add_bias_rows(const Tensor& bias, Tensor& y) {
  const int64_t n = y.size(1);
  std::vector<float> b(static_cast<size_t>(n));
  convert_to_float(bias.data(), bias.dtype(), b.data(), n);
  for (int64_t t = 0; t < y.size(0); ++t) {
    float* row = static_cast<float*>(y.ptr_at({t}));
    for (int64_t j = 0; j < n; ++j) row[j] += b[static_cast<size_t>(j)];
  }
}

}  // namespace

void all_reduce_sum(const Context& ctx, Tensor& partial) {
  if (ctx.comm == nullptr) return;
  (void)partial;
  no_tensor_parallel("all_reduce_sum");
}

void row_parallel_linear(const Context& ctx, const Tensor& x, const Tensor& w, const Tensor& bias,
                         Tensor& y) {
  if (ctx.comm == nullptr) {
    kernels::linear(ctx, x, w, bias, y);
    return;
  }
  kernels::linear(ctx, x, w, Tensor(), y);
  all_reduce_sum(ctx, y);
  if (bias.defined()) add_bias_rows(bias, y);
}

void gather_vocab(const Context& ctx, const Tensor& local, Tensor& full) {
  FA_ASSERT(ctx.comm != nullptr, "gather_vocab is only called with a communicator");
  (void)local;
  (void)full;
  no_tensor_parallel("gather_vocab");
}

}  // namespace fastattn::layers
