#include "fastattn/runtime/distributed.h"

#include <cstdint>
#include <exception>
#include <vector>

#include "fastattn/comm/mpi_runtime.h"
#include "fastattn/core/error.h"

namespace fastattn::runtime {
namespace {

std::string launch_hint(int tp) {
  return detail::concat("`mpirun -n ", tp, " python your_script.py` (one process per rank)");
}

}  // namespace

TensorParallel::TensorParallel(const models::ModelConfig& cfg, Device device,
                               const TensorParallelOptions& o) {
  FA_CHECK(o.tiles >= 0, "tp_tiles: must be >= 0 (0 = chosen from the token count), got ", o.tiles);
  const int tp = cfg.tp_size;
  const comm::LaunchInfo li = comm::detect_launch();
  if (!li.launched) {
    FA_CHECK(tp == 1, cfg.file, ": tp_size = ", tp, ": tensor parallelism needs `mpirun` with ", tp,
             " processes, one per rank, and this process was started alone; run it as ",
             launch_hint(tp), ", or export the model with tp_size = 1 to run it in one process");
    return;
  }
  if (li.world_size == 1 && tp == 1) return;  // `mpirun -n 1`: nothing to share

  try {
    mpi_ = std::make_unique<comm::MpiCommunicator>();
  } catch (const comm::CommError& e) {
    if (li.world_size > 0 && li.world_size != tp) {
      FA_THROW_AS(InvalidArgument, cfg.file, ": tp_size = ", tp, " but ", li.source, " says ",
                  li.world_size, " processes were started: run ", launch_hint(tp),
                  " (and note: ", e.what(), ")");
    }
    throw;
  }
  rank_ = mpi_->rank();
  world_size_ = mpi_->size();
  // Every rank checks the same facts, so every rank reaches the same verdict.
  const std::vector<int64_t> agreed = mpi_->all_reduce_max({tp, -static_cast<int64_t>(tp)});
  if (agreed[0] != -agreed[1]) {
    fail_everywhere(
        detail::concat(cfg.file, ": the ranks' models disagree on tp_size (from ", -agreed[1],
                       " to ", agreed[0], "); every rank must load the ", "same export"),
        true);
  }
  if (world_size_ != tp) {
    fail_everywhere(detail::concat(cfg.file, ": tp_size = ", tp, " but this MPI job has ",
                                   world_size_, " processes (rank ", rank_, "): run ",
                                   launch_hint(tp), " or export the model with --tp ", world_size_),
                    true);
  }
  if (world_size_ == 1) {
    mpi_.reset();
    return;
  }
  if (device.type == DeviceType::kCUDA) {
    run_on_all_ranks("creating the NCCL communicator",
                     [&] { gpu_comm_ = comm::create_communicator("nccl", device); });
    comm_ = gpu_comm_.get();
  } else {
    comm_ = mpi_.get();
  }
  comm_->tiling().overlap = o.overlap;
  comm_->tiling().num_tiles = o.tiles;
}

TensorParallel::~TensorParallel() {
  gpu_comm_.reset();  // before the MPI communicator that bootstrapped it
  mpi_.reset();
}

void TensorParallel::fail_everywhere(const std::string& message, bool invalid_argument) {
  // Every rank is here: end MPI together, so each rank reports its error and exits normally
  // (the Python package's abort-on-error hook then has no job left to abort).
  comm_ = nullptr;
  gpu_comm_.reset();
  mpi_.reset();
  if (comm::MpiRuntime* rt = comm::MpiRuntime::if_started()) rt->finalize();
  if (invalid_argument) throw InvalidArgument(message);
  throw comm::CommError(message);
}

void TensorParallel::run_on_all_ranks(const char* what, const std::function<void()>& step) {
  std::exception_ptr error;
  try {
    step();
  } catch (...) {
    error = std::current_exception();
  }
  if (!mpi_) {
    if (error) std::rethrow_exception(error);
    return;
  }
  // Lowest failed rank (as max of -rank), and whether any failed.
  const std::vector<int64_t> agreed =
      mpi_->all_reduce_max({error ? 1 : 0, error ? -static_cast<int64_t>(rank_) : INT64_MIN});
  if (agreed[0] == 0) return;
  if (error) {
    comm_ = nullptr;
    gpu_comm_.reset();
    mpi_.reset();
    if (comm::MpiRuntime* rt = comm::MpiRuntime::if_started()) rt->finalize();
    std::rethrow_exception(error);
  }
  fail_everywhere(
      detail::concat("rank ", rank_, " of ", world_size_, ": ", what, " failed on rank ",
                     -agreed[1], " (its error is reported there), so this rank stops too"),
      false);
}

void TensorParallel::check_same_on_all_ranks(uint64_t fingerprint, const char* what) {
  if (!mpi_) return;
  const auto v = static_cast<int64_t>(fingerprint >> 2);  // 62 bits: -v cannot overflow
  const std::vector<int64_t> agreed = mpi_->all_reduce_max({v, -v});
  if (agreed[0] == -agreed[1]) return;
  FA_THROW_AS(InvalidArgument, "rank ", rank_, " of ", world_size_, ": ", what,
              " differs between the ranks; under mpirun every rank must make the same calls with ",
              "the same arguments");
}

bool TensorParallel::any_rank(bool flag) {
  if (!mpi_) return flag;
  return mpi_->all_reduce_max({flag ? 1 : 0})[0] != 0;
}

void TensorParallel::broadcast_int64s(std::vector<int64_t>& values, int root) {
  if (!mpi_) return;
  int64_t n = static_cast<int64_t>(values.size());
  mpi_->broadcast_bytes(&n, sizeof(n), root);
  values.resize(static_cast<size_t>(n));
  if (n > 0) mpi_->broadcast_bytes(values.data(), n * static_cast<int64_t>(sizeof(int64_t)), root);
}

Device rank_device(const std::string& option) {
  Device d = parse_device(option);
  if (option == "cuda") {
    const comm::LaunchInfo li = comm::detect_launch();
    if (li.launched) {
      comm::MpiRuntime* rt = comm::MpiRuntime::if_started();
      d.index = rt != nullptr ? rt->local_rank() : li.local_rank;
    }
  }
  return d;
}

}  // namespace fastattn::runtime
