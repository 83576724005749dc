// MpiCommunicator: the CPU backend, over every rank of the MPI job (a duplicate of
// MPI_COMM_WORLD, so its traffic never mixes with other users of MPI in the process).
//
// Blocking collectives run on the calling thread. all_reduce_sum_async hands the all-reduce to
// a per-communicator progress thread (MPI_Iallreduce, polled until done), so the caller computes
// the next GEMM tile meanwhile; collectives keep their call order because a blocking call first
// waits for the queued ones. Without MPI_THREAD_MULTIPLE the async call runs inline (no overlap).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "fastattn/comm/communicator.h"
#include "fastattn/comm/mpi_runtime.h"

namespace fastattn::comm {

class AsyncWorker;

class MpiCommunicator : public Communicator {
 public:
  // Starts MPI if needed (MpiRuntime::get(); throws CommError saying how to get MPI).
  MpiCommunicator();
  ~MpiCommunicator() override;
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;

  const char* backend() const override { return "mpi"; }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  Device device() const override { return Device{}; }
  bool single_node() const override { return rt_.local_size() == size_; }
  void all_reduce_sum(const Context& ctx, Tensor& buf) override;
  std::unique_ptr<CommRequest> all_reduce_sum_async(const Context& ctx, Tensor& buf) override;
  void all_gather(const Context& ctx, const Tensor& in, Tensor& out) override;
  void broadcast(const Context& ctx, Tensor& buf, int root) override;
  void barrier() override;

  // Element-wise maximum over ranks (host values): for checking that every rank agrees.
  std::vector<int64_t> all_reduce_max(const std::vector<int64_t>& values);
  // Broadcast of raw host bytes from root (e.g. the NCCL unique id).
  void broadcast_bytes(void* data, int64_t nbytes, int root);
  // True when async all-reduces run on the progress thread (MPI_THREAD_MULTIPLE).
  bool overlaps() const { return worker_ != nullptr; }

 private:
  void reduce_now(void* data, int64_t n, DType dtype);  // on the calling thread
  void drain();                                         // waits for the queued async collectives

  MpiRuntime& rt_;
  fa_mpi_comm* comm_ = nullptr;
  int rank_ = 0;
  int size_ = 1;
  std::unique_ptr<AsyncWorker> worker_;
};

}  // namespace fastattn::comm
