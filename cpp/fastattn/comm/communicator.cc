#include "fastattn/comm/communicator.h"

#include "fastattn/comm/mpi_communicator.h"
#include "fastattn/comm/mpi_runtime.h"
#include "fastattn/core/copy.h"

#if defined(FASTATTN_WITH_CUDA)
#include "fastattn/comm/cuda/nccl_communicator.h"
#endif

namespace fastattn::comm {
namespace {

class DoneRequest : public CommRequest {
 public:
  void wait() override {}
};

}  // namespace

std::string Communicator::where() const {
  return detail::concat("rank ", rank(), " of ", size(), " (", backend(), ")");
}

void Communicator::check_buffer(const Tensor& t, const char* op, const char* name) const {
  FA_CHECK(t.defined(), where(), ": ", op, ": ", name, " is undefined");
  FA_CHECK(t.is_contiguous(), where(), ": ", op, ": ", name, " ", t.describe(),
           " must be contiguous");
  const Device d = device();
  if (d.type == DeviceType::kCUDA) {
    FA_CHECK(t.device() == d, where(), ": ", op, ": ", name, " is on ", t.device().str(),
             ", the communicator on ", d.str());
  } else {
    FA_CHECK(t.device().is_cpu_addressable(), where(), ": ", op, ": ", name, " is on ",
             t.device().str(), "; the ", backend(), " backend takes CPU tensors");
  }
}

void LocalCommunicator::all_reduce_sum(const Context& ctx, Tensor& buf) {
  (void)ctx;
  check_buffer(buf, "all_reduce_sum", "buf");
}

std::unique_ptr<CommRequest> LocalCommunicator::all_reduce_sum_async(const Context& ctx,
                                                                     Tensor& buf) {
  all_reduce_sum(ctx, buf);
  return std::make_unique<DoneRequest>();
}

void LocalCommunicator::all_gather(const Context& ctx, const Tensor& in, Tensor& out) {
  check_buffer(in, "all_gather", "in");
  check_buffer(out, "all_gather", "out");
  FA_CHECK(in.dtype() == out.dtype() && in.numel() == out.numel(), where(), ": all_gather: out ",
           out.describe(), " must hold in ", in.describe());
  detail::copy_bytes(ctx, out.data(), out.device(), in.data(), in.device(), in.nbytes());
}

void LocalCommunicator::broadcast(const Context& ctx, Tensor& buf, int root) {
  (void)ctx;
  check_buffer(buf, "broadcast", "buf");
  FA_CHECK(root == 0, where(), ": broadcast: root ", root, " out of range");
}

std::unique_ptr<Communicator> create_communicator(const std::string& backend, Device device) {
  std::string b = backend;
  if (b == "auto") {
    const comm::LaunchInfo li = comm::detect_launch();
    if (!li.launched) {
      b = "local";
    } else {
      b = device.type == DeviceType::kCUDA ? "nccl" : "mpi";
    }
  }
  if (b == "local") return std::make_unique<LocalCommunicator>(device);
  if (b == "mpi") {
    FA_CHECK(device.is_cpu_addressable(), "communicator backend 'mpi' takes CPU tensors, not ",
             device.str(), "; use 'nccl' for GPUs");
    return std::make_unique<MpiCommunicator>();
  }
  if (b == "nccl") {
    FA_CHECK(device.type == DeviceType::kCUDA,
             "communicator backend 'nccl' needs a CUDA device, got ", device.str());
#if defined(FASTATTN_WITH_CUDA)
    return create_nccl_communicator(device.index);
#else
    FA_THROW_AS(InvalidArgument, "communicator backend 'nccl': this build has no CUDA support");
#endif
  }
  FA_THROW_AS(InvalidArgument, "communicator backend '", backend,
              "': expected auto, local, mpi or nccl (hccl is not built: no Ascend toolkit)");
}

}  // namespace fastattn::comm
