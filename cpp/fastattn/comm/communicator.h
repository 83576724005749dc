// Communicator: the collectives tensor parallelism needs, over the ranks of one model.
//
// Backends: LocalCommunicator (one rank), MpiCommunicator (CPU tensors, comm/mpi_communicator.h),
// NcclCommunicator (CUDA tensors, comm/cuda/nccl_communicator.h). An HCCL backend (Ascend) would
// be one more implementation of this class; it is not built here (no Ascend toolkit).
//
// Semantics shared by every backend:
//   * Every rank calls the same collectives in the same order (as MPI and NCCL require).
//   * Buffers are contiguous tensors on the backend's device kind. CPU backends block the calling
//     thread until the operation is done. GPU backends enqueue the operation on ctx.stream and
//     return at once (stream order, no host synchronisation).
//   * all_reduce_sum_async starts an all-reduce and returns a CommRequest; request.wait() makes
//     later work see the result: on the CPU it blocks until done, on a GPU it makes ctx.stream
//     (of the async call) wait for the communication stream. The buffer must not be touched
//     between the two calls.
//   * Errors (MPI, NCCL, CUDA, timeouts) throw CommError naming the rank; bad arguments throw
//     InvalidArgument naming the tensor.
#pragma once

#include <memory>
#include <string>

#include "fastattn/core/context.h"
#include "fastattn/core/error.h"
#include "fastattn/core/tensor.h"

namespace fastattn::comm {

// A collective or the communication library failed (a Python RuntimeError).
class CommError : public Error {
 public:
  explicit CommError(const std::string& what) : Error(what) {}
};

// A collective started by an *_async call (see the semantics above).
class CommRequest {
 public:
  virtual ~CommRequest() = default;
  // Idempotent; rethrows the collective's error, if any.
  virtual void wait() = 0;
};

// Tiling-AllReduce of the row-parallel GEMMs (comm/tiled_all_reduce.h).
struct TiledAllReduceOptions {
  bool overlap = true;  // false: the whole GEMM, then one all-reduce (for comparison)
  int num_tiles = 0;    // row tiles; 0 = the backend's default (choose_num_tiles)
  // GPU backends: the SMs each tile's GEMM may use (cuBLAS's SM count target), so that the GEMMs
  // leave SMs to the all-reduces running beside them; 0 = all, -1 = chosen by plan_tiles from
  // the GEMM's size. The NCCL backend sets it at start (FASTATTN_TP_GEMM_SMS, else -1).
  int gemm_sms = -1;
  // GPU backends: a tile's all-reduce is an all-gather on the copy engines and a short sum kernel
  // (comm/cuda/nccl_gather_reduce.h) instead of NCCL's all-reduce kernels. The NCCL backend sets
  // it at start (FASTATTN_TP_ALLREDUCE=gather; default nccl: off).
  bool gather_reduce = false;
};

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual const char* backend() const = 0;  // "local", "mpi", "nccl"
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // Device kind of the buffers: CPU for local and MPI, the communicator's GPU for NCCL.
  virtual Device device() const = 0;
  // True when every rank runs on this machine (CPU backends: the all-reduce is then memory
  // copies by the same cores that run the GEMMs, so overlapping them cannot pay).
  virtual bool single_node() const { return true; }
  // Streaming multiprocessors of the communicator's GPU (0 for CPU backends).
  virtual int sm_count() const { return 0; }

  // buf = sum of every rank's buf (in place). float32 / int32 / int64 on every backend,
  // float16 / bfloat16 too on GPU backends.
  virtual void all_reduce_sum(const Context& ctx, Tensor& buf) = 0;
  virtual std::unique_ptr<CommRequest> all_reduce_sum_async(const Context& ctx, Tensor& buf) = 0;
  // out = concatenation of every rank's `in`, rank-major: out holds size() * in.numel()
  // elements of in's dtype (any dtype; any shape with that many elements).
  virtual void all_gather(const Context& ctx, const Tensor& in, Tensor& out) = 0;
  // buf = root's buf on every rank (any dtype).
  virtual void broadcast(const Context& ctx, Tensor& buf, int root) = 0;
  // Returns once every rank has reached the barrier (GPU backends: and their queued
  // communication has finished).
  virtual void barrier() = 0;

  TiledAllReduceOptions& tiling() { return tiling_; }
  const TiledAllReduceOptions& tiling() const { return tiling_; }
  // "rank R of N (backend)": the prefix of this communicator's error messages.
  std::string where() const;

 protected:
  // Checks a collective's buffer: defined, contiguous, on this backend's device kind.
  void check_buffer(const Tensor& t, const char* op, const char* name) const;

 private:
  TiledAllReduceOptions tiling_;
};

// The trivial communicator of a single rank: reductions and broadcasts leave buffers as they
// are, all_gather copies. Still checks its arguments like the others.
class LocalCommunicator : public Communicator {
 public:
  explicit LocalCommunicator(Device device = {}) : device_(device) {}
  const char* backend() const override { return "local"; }
  int rank() const override { return 0; }
  int size() const override { return 1; }
  Device device() const override { return device_; }
  void all_reduce_sum(const Context& ctx, Tensor& buf) override;
  std::unique_ptr<CommRequest> all_reduce_sum_async(const Context& ctx, Tensor& buf) override;
  void all_gather(const Context& ctx, const Tensor& in, Tensor& out) override;
  void broadcast(const Context& ctx, Tensor& buf, int root) override;
  void barrier() override {}

 private:
  Device device_;
};

// Creates the communicator of this process over every rank started by the launcher:
//   backend "mpi": CPU tensors over MPI; "nccl": the GPU `device` over NCCL (bootstrapped over
//   MPI); "local": one rank; "auto": nccl for a CUDA device, mpi for the CPU, local when the
//   process runs alone (not started by mpirun).
// Throws CommError saying how to get MPI / NCCL when this build or machine lacks them.
std::unique_ptr<Communicator> create_communicator(const std::string& backend, Device device);

}  // namespace fastattn::comm
