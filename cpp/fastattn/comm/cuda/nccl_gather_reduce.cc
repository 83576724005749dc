#include "fastattn/comm/cuda/nccl_gather_reduce.h"

#if defined(FASTATTN_WITH_NCCL)
#include <utility>

#include "fastattn/comm/cuda/slot_sum.h"
#include "fastattn/core/cuda/cuda_check.h"
#include "fastattn/core/error.h"

namespace fastattn::comm {

namespace {
constexpr size_t kGranularity = size_t{2} << 20;  // window slots in whole 2 MiB
}  // namespace

NcclGatherReduce::NcclGatherReduce(ncclComm_t comm, int rank, int size,
                                   std::function<void(ncclResult_t, const char*)> check)
    : comm_(comm), rank_(rank), size_(size), check_(std::move(check)) {}

NcclGatherReduce::~NcclGatherReduce() {
  release();
  if (comm_ != nullptr) ncclCommDestroy(comm_);
}

void NcclGatherReduce::release() {
  if (window_mem_ == nullptr) return;
#if FASTATTN_HAS_NCCL_GATHER_REDUCE
  if (window_ != nullptr) ncclCommWindowDeregister(comm_, window_);
  window_ = nullptr;
#endif
  ncclMemFree(window_mem_);
  window_mem_ = nullptr;
  slot_bytes_ = 0;
}

void NcclGatherReduce::reserve(size_t bytes, cudaStream_t stream) {
  if (bytes <= slot_bytes_) return;
#if FASTATTN_HAS_NCCL_GATHER_REDUCE
  // Every rank grows at the same call (same buffer sizes on every rank): the window's
  // registration is collective. The old window may still be in use by queued work.
  FA_CUDA_CHECK(cudaStreamSynchronize(stream));
  release();
  const size_t slot = (bytes + kGranularity - 1) / kGranularity * kGranularity;
  const size_t total = slot * static_cast<size_t>(1 + size_);
  check_(ncclMemAlloc(&window_mem_, total), "ncclMemAlloc (gather all-reduce window)");
  check_(ncclCommWindowRegister(comm_, window_mem_, total, &window_, NCCL_WIN_COLL_SYMMETRIC),
         "ncclCommWindowRegister (gather all-reduce window)");
  slot_bytes_ = slot;
#else
  (void)stream;
  FA_THROW_AS(Error, "the copy-engine gather all-reduce needs NCCL >= 2.28 (this build has ",
              NCCL_MAJOR, ".", NCCL_MINOR, "): unset FASTATTN_TP_ALLREDUCE=gather");
#endif
}

void NcclGatherReduce::all_reduce(void* buf, int64_t numel, DType dtype, cudaStream_t stream) {
  if (numel <= 0) return;
  const size_t bytes = static_cast<size_t>(numel) * dtype_size(dtype);
  reserve(bytes, stream);
  // Window layout (the same offsets on every rank, as a symmetric window needs):
  // [send slot][rank 0's slot]...[rank N-1's slot].
  char* send = static_cast<char*>(window_mem_);
  char* slots = send + slot_bytes_;
  FA_CUDA_CHECK(cudaMemcpyAsync(send, buf, bytes, cudaMemcpyDeviceToDevice, stream));
  // Slots are slot_bytes_ apart; the all-gather packs rank r's bytes at r * bytes.
  // The all-gather moves bytes; the slot sum reads them back as `dtype`.
  check_(ncclAllGather(send, slots, bytes, ncclInt8, comm_, stream),
         "ncclAllGather (gather all-reduce)");
  cuda::launch_slot_sum(slots, buf, numel, size_, dtype, stream);
}

}  // namespace fastattn::comm
#endif  // FASTATTN_WITH_NCCL
