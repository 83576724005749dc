// NcclCommunicator: the GPU backend (CUDA builds; compiled with NCCL when CMake finds it).
//
// One GPU per rank. The NCCL unique id is created on rank 0 and broadcast over MPI
// (MpiCommunicator), so NCCL runs inside the same `mpirun` job as the CPU backend. Collectives
// are enqueued on ctx.stream; all_reduce_sum_async runs on the communicator's own
// high-priority communication stream, ordered after the work already on ctx.stream by an event,
// and request.wait() makes ctx.stream wait for it (no host synchronisation).
//
// NCCL's channel / CTA counts (how many SMs its kernels take from the concurrent GEMM tiles) can
// be limited with FASTATTN_NCCL_MIN_CTAS / FASTATTN_NCCL_MAX_CTAS (ncclConfig_t, NCCL >= 2.14).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "fastattn/comm/communicator.h"

namespace fastattn::comm {

// True when this build has NCCL.
bool nccl_built();

// The NCCL communicator of this rank on GPU `device`, over every rank of the MPI job. Throws
// CommError when the build has no NCCL (saying how to get it) or NCCL fails.
std::unique_ptr<Communicator> create_nccl_communicator(int device);

// rows x width bytes, device to device, on ctx.stream (cudaMemcpy2DAsync).
void cuda_copy_2d(const Context& ctx, void* dst, size_t dpitch, const void* src, size_t spitch,
                  size_t width, int64_t rows);

}  // namespace fastattn::comm
