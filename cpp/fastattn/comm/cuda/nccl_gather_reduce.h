// The copy-engine all-reduce of the tiling-AllReduce (NCCL >= 2.28): buf is copied into an
// NCCL symmetric window, all-gathered there by NCCL's zero-CTA path (the GPUs' copy engines move
// the data over NVLink, no SMs), and summed slot by slot in rank order by a short kernel
// (comm/cuda/slot_sum.h). The SMs stay with the GEMM tiles that run beside it, where NCCL's
// all-reduce kernels would take some of them.
//
// Per rank it moves (ranks - 1) copies of buf where a ring all-reduce moves 2 (ranks - 1) / ranks:
// the same at 2 ranks, more beyond. Measured on 2 x H200 it was slower than NCCL's all-reduce, so
// it runs only when asked for (FASTATTN_TP_ALLREDUCE=gather, nccl_communicator.cc).
// The window holds (1 + ranks) x the largest buffer so far (grown, collectively, when needed).
#pragma once

#if defined(FASTATTN_WITH_NCCL)
#include <cuda_runtime.h>
#include <nccl.h>

#include <cstddef>
#include <cstdint>
#include <functional>

#include "fastattn/core/dtype.h"

#define FASTATTN_HAS_NCCL_GATHER_REDUCE (NCCL_VERSION_CODE >= NCCL_VERSION(2, 28, 0))

namespace fastattn::comm {

class NcclGatherReduce {
 public:
  // comm: this object's own communicator, created with NCCL_CTA_POLICY_ZERO (owned here).
  // check(result, what) throws for an NCCL error (the owner's, naming the rank).
  NcclGatherReduce(ncclComm_t comm, int rank, int size,
                   std::function<void(ncclResult_t, const char*)> check);
  ~NcclGatherReduce();
  NcclGatherReduce(const NcclGatherReduce&) = delete;
  NcclGatherReduce& operator=(const NcclGatherReduce&) = delete;

  // Enqueues buf[0, numel) = its sum over the ranks on `stream` (every rank calls it in the same
  // order with the same numel and dtype, as for any collective).
  void all_reduce(void* buf, int64_t numel, DType dtype, cudaStream_t stream);

 private:
  void reserve(size_t bytes, cudaStream_t stream);
  void release();

  ncclComm_t comm_;
  int rank_;
  int size_;
  std::function<void(ncclResult_t, const char*)> check_;
  void* window_mem_ = nullptr;
  size_t slot_bytes_ = 0;  // capacity of one slot (the largest buffer so far)
#if FASTATTN_HAS_NCCL_GATHER_REDUCE
  ncclWindow_t window_ = nullptr;
#endif
};

}  // namespace fastattn::comm
#endif  // FASTATTN_WITH_NCCL
