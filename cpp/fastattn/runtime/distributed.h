// Tensor parallelism for a session: which rank this process is, and the communicator its model
// uses. Users start one process per rank with `mpirun -n N` (N = the tp_size the model was
// exported with); rank and world size come from MPI.
//
// Failure rules (no rank is left waiting in a collective):
//   * tp_size > 1 in a process started alone: InvalidArgument (needs mpirun).
//   * world size != tp_size, or ranks that disagree on tp_size: InvalidArgument on every rank.
//   * a step every rank runs (loading the model) that fails on some ranks: those rethrow their
//     error, the others throw CommError naming the failed ranks.
//   In these cases every rank reaches the same decision, so MPI is finalised before the throw and
//   each rank reports its own error and exits normally. A failure on one rank only (mid-run)
//   should end the job with comm::abort_job() (the Python package does it for uncaught
//   exceptions); collective waits also give up after FASTATTN_COMM_TIMEOUT seconds.
#pragma once

#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "fastattn/comm/communicator.h"
#include "fastattn/comm/mpi_communicator.h"
#include "fastattn/core/device.h"
#include "fastattn/models/model_config.h"

namespace fastattn::runtime {

struct TensorParallelOptions {
  bool overlap = true;  // tiling-AllReduce of the row-parallel GEMMs
  int tiles = 0;        // row tiles; 0 = chosen from the token count
};

class TensorParallel {
 public:
  TensorParallel() = default;
  // Checks cfg.tp_size against the launch and creates the communicator for `device` (NCCL for a
  // CUDA device, MPI for the CPU). tp_size 1 outside mpirun needs no MPI at all.
  TensorParallel(const models::ModelConfig& cfg, Device device, const TensorParallelOptions& o);
  TensorParallel(TensorParallel&&) = default;
  TensorParallel& operator=(TensorParallel&&) = default;
  ~TensorParallel();

  int rank() const { return rank_; }
  int world_size() const { return world_size_; }
  // The model's communicator; null for one rank (Context::comm).
  comm::Communicator* comm() const { return comm_; }

  // Runs step() on every rank; if it throws on any rank, every rank throws (see above).
  void run_on_all_ranks(const char* what, const std::function<void()>& step);
  // Throws InvalidArgument on every rank unless every rank passes the same fingerprint (e.g. a
  // hash of a generate() call's prompts and options: ranks must run the same calls).
  void check_same_on_all_ranks(uint64_t fingerprint, const char* what);
  // Whether `flag` is true on any rank (a host reduction; just `flag` for one rank).
  bool any_rank(bool flag);
  // Rank `root`'s `values` on every rank (sized to root's; a no-op for one rank). Host side.
  void broadcast_int64s(std::vector<int64_t>& values, int root);

 private:
  [[noreturn]] void fail_everywhere(const std::string& message, bool invalid_argument);

  int rank_ = 0;
  int world_size_ = 1;
  std::unique_ptr<comm::MpiCommunicator> mpi_;    // host-side agreement (and the CPU backend)
  std::unique_ptr<comm::Communicator> gpu_comm_;  // NCCL, for CUDA devices
  comm::Communicator* comm_ = nullptr;
};

// FNV-1a over the values a call depends on (for TensorParallel::check_same_on_all_ranks).
class Fingerprint {
 public:
  Fingerprint& add(uint64_t v) {
    for (int i = 0; i < 8; ++i) {
      h_ ^= (v >> (8 * i)) & 0xffu;
      h_ *= 1099511628211ull;
    }
    return *this;
  }
  Fingerprint& add_float(float f) {
    uint32_t u = 0;
    std::memcpy(&u, &f, sizeof(u));
    return add(u);
  }
  Fingerprint& add_tokens(const std::vector<int64_t>& ids) {
    add(ids.size());
    for (int64_t t : ids) add(static_cast<uint64_t>(t));
    return *this;
  }
  uint64_t value() const { return h_; }

 private:
  uint64_t h_ = 1469598103934665603ull;
};

// The device of this rank for a device option: "cuda" without an index under mpirun means
// cuda:<local rank> (one GPU per rank); anything else is parse_device(option).
Device rank_device(const std::string& option);

}  // namespace fastattn::runtime
