#include "fastattn/layers/parallel.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "fastattn/comm/communicator.h"
#include "fastattn/comm/tiled_all_reduce.h"
#include "fastattn/core/allocator.h"
#include "fastattn/core/error.h"
#include "fastattn/kernels/gemm.h"

#if defined(FASTATTN_WITH_CUDA)
#include "fastattn/comm/cuda/nccl_communicator.h"
#endif

namespace fastattn::layers {
namespace {

// Scratch memory on `device`: the context's allocator when it serves that device.
Allocator* scratch_allocator(const Context& ctx, Device device) {
#if defined(FASTATTN_WITH_CUDA)
  if (device.type == DeviceType::kCUDA) {
    return ctx.allocator != nullptr && ctx.allocator->device() == device
               ? ctx.allocator
               : device_allocator(device.index);
  }
#endif
  return ctx.allocator != nullptr && ctx.allocator->device().is_cpu_addressable()
             ? ctx.allocator
             : host_allocator();
}

// rows x width_bytes block: dst rows dpitch bytes apart, src rows spitch bytes apart.
void copy_2d(const Context& ctx, Device device, void* dst, size_t dpitch, const void* src,
             size_t spitch, size_t width_bytes, int64_t rows) {
#if defined(FASTATTN_WITH_CUDA)
  if (device.type == DeviceType::kCUDA) {
    comm::cuda_copy_2d(ctx, dst, dpitch, src, spitch, width_bytes, rows);
    return;
  }
#endif
  (void)ctx;
  (void)device;
  for (int64_t r = 0; r < rows; ++r) {
    std::memcpy(static_cast<char*>(dst) + r * dpitch, static_cast<const char*>(src) + r * spitch,
                width_bytes);
  }
}

}  // namespace

void linear_all_reduce(const Context& ctx, comm::Communicator& comm, const Tensor& x,
                       const Tensor& w, Tensor& y) {
  FA_CHECK(x.dim() == 2 && y.dim() == 2 && x.size(0) == y.size(0), comm.where(),
           ": linear_all_reduce: x ", x.describe(), " and y ", y.describe(),
           " must be 2-D with the same rows");
  const comm::TilePlan plan = comm::plan_tiles(comm, x.size(0), y.size(1), x.size(1));
  Context tile_ctx = ctx;
  tile_ctx.gemm_sm_target = plan.gemm_sms;
  comm::tiled_all_reduce(ctx, comm, y, plan.tiles, [&](int64_t begin, int64_t end) {
    const Tensor xt = x.slice(0, begin, end);
    Tensor yt = y.slice(0, begin, end);
    kernels::linear(tile_ctx, xt, w, Tensor(), yt);
  });
}

void all_reduce_sum(const Context& ctx, Tensor& partial) {
  if (ctx.comm == nullptr) return;
  ctx.comm->all_reduce_sum(ctx, partial);
}

void row_parallel_linear(const Context& ctx, const Tensor& x, const Tensor& w, const Tensor& bias,
                         Tensor& y) {
  if (ctx.comm == nullptr) {
    kernels::linear(ctx, x, w, bias, y);
    return;
  }
  linear_all_reduce(ctx, *ctx.comm, x, w, y);
  if (bias.defined()) kernels::add_bias(ctx, bias, y);
}

void gather_vocab(const Context& ctx, const Tensor& local, Tensor& full) {
  FA_ASSERT(ctx.comm != nullptr, "gather_vocab is only called with a communicator");
  comm::Communicator& comm = *ctx.comm;
  FA_CHECK(local.dim() == 2 && full.dim() == 2 && local.size(0) == full.size(0) &&
               local.dtype() == full.dtype(),
           comm.where(), ": gather_vocab: local logits ", local.describe(), " and full logits ",
           full.describe(), " must be 2-D with the same rows and dtype");
  FA_CHECK(full.last_dim_contiguous(), comm.where(),
           ": gather_vocab: the logits' last dimension must be contiguous");
  const int tp = comm.size();
  const int64_t rows = local.size(0);
  const int64_t shard = local.size(1);
  const int64_t vocab = full.size(1);
  FA_CHECK(vocab <= tp * shard, comm.where(), ": gather_vocab: ", tp, " shards of ", shard,
           " columns cannot hold a vocabulary of ", vocab);
  const size_t esize = dtype_size(local.dtype());
  const Device dev = local.device();
  Buffer gathered_buf(scratch_allocator(ctx, dev),
                      static_cast<size_t>(tp) * static_cast<size_t>(rows * shard) * esize);
  Tensor gathered(gathered_buf.data(), local.dtype(), {static_cast<int64_t>(tp), rows, shard}, dev);
  comm.all_gather(ctx, local, gathered);
  // gathered[k] holds columns k * shard .. of every row: place them, dropping the padding.
  for (int k = 0; k < tp; ++k) {
    const int64_t cols = std::clamp<int64_t>(vocab - k * shard, 0, shard);
    if (cols == 0 || rows == 0) continue;
    copy_2d(ctx, dev, static_cast<char*>(full.data()) + k * shard * esize,
            static_cast<size_t>(full.stride(0)) * esize,
            static_cast<const char*>(gathered.data()) + k * rows * shard * esize,
            static_cast<size_t>(shard) * esize, static_cast<size_t>(cols) * esize, rows);
  }
}

}  // namespace fastattn::layers
