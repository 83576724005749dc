#include "fastattn/comm/mpi_communicator.h"

#include <algorithm>
#include <climits>
#include <condition_variable>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>

namespace fastattn::comm {

// One operation queued on the progress thread.
struct AsyncOp {
  std::function<void()> run;
  bool done = false;
  std::exception_ptr error;
};

// Runs queued collectives one after another on its own thread. After a failure the
// communicator is broken (ranks may disagree on what completed), so later operations fail at
// once with the first error instead of waiting for a timeout each.
class AsyncWorker {
 public:
  AsyncWorker() : thread_([this] { loop(); }) {}
  ~AsyncWorker() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_work_.notify_all();
    thread_.join();
  }

  std::shared_ptr<AsyncOp> submit(std::function<void()> fn) {
    auto op = std::make_shared<AsyncOp>();
    op->run = std::move(fn);
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.push_back(op);
      ++pending_;
    }
    cv_work_.notify_one();
    return op;
  }

  void wait(const AsyncOp& op) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_done_.wait(lock, [&] { return op.done; });
  }

  void drain() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_done_.wait(lock, [&] { return pending_ == 0; });
  }

 private:
  void loop() {
    for (;;) {
      std::shared_ptr<AsyncOp> op;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_work_.wait(lock, [&] { return stop_ || !queue_.empty(); });
        if (queue_.empty()) return;
        op = queue_.front();
        queue_.pop_front();
      }
      std::exception_ptr error = first_error_;
      if (!error) {
        try {
          op->run();
        } catch (...) {
          error = std::current_exception();
          first_error_ = error;
        }
      }
      {
        std::lock_guard<std::mutex> lock(mu_);
        op->error = error;
        op->done = true;
        --pending_;
      }
      cv_done_.notify_all();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_work_;
  std::condition_variable cv_done_;
  std::deque<std::shared_ptr<AsyncOp>> queue_;
  int pending_ = 0;
  bool stop_ = false;
  std::exception_ptr first_error_;  // touched by the worker thread only
  std::thread thread_;              // last: started once the members above exist
};

namespace {

class WorkerRequest : public CommRequest {
 public:
  WorkerRequest(AsyncWorker& w, std::shared_ptr<AsyncOp> op) : worker_(w), op_(std::move(op)) {}
  // The buffer stays in use until the operation ends, so an unwaited request still waits.
  ~WorkerRequest() override {
    if (op_) worker_.wait(*op_);
  }
  void wait() override {
    if (!op_) return;
    worker_.wait(*op_);
    const std::exception_ptr error = op_->error;
    op_.reset();
    if (error) std::rethrow_exception(error);
  }

 private:
  AsyncWorker& worker_;
  std::shared_ptr<AsyncOp> op_;
};

class DoneRequest : public CommRequest {
 public:
  void wait() override {}
};

int mpi_dtype(DType dt, const std::string& where) {
  switch (dt) {
    case DType::kFloat32:
      return FA_MPI_FLOAT32;
    case DType::kInt32:
      return FA_MPI_INT32;
    case DType::kInt64:
      return FA_MPI_INT64;
    default:
      FA_THROW_AS(InvalidArgument, where, ": all_reduce_sum: dtype ", dtype_name(dt),
                  " is not reduced by the MPI backend (float32, int32, int64; CPU activations are ",
                  "float32)");
  }
}

constexpr int64_t kMaxChunk = INT_MAX;  // MPI counts are ints

}  // namespace

MpiCommunicator::MpiCommunicator() : rt_(MpiRuntime::get()) {
  rt_.check(rt_.api().fa_mpi_world_dup(&comm_), "MPI_Comm_dup(MPI_COMM_WORLD)");
  rt_.check(rt_.api().fa_mpi_comm_rank(comm_, &rank_), "MPI_Comm_rank");
  rt_.check(rt_.api().fa_mpi_comm_size(comm_, &size_), "MPI_Comm_size");
  if (rt_.thread_multiple()) worker_ = std::make_unique<AsyncWorker>();
}

MpiCommunicator::~MpiCommunicator() {
  try {
    if (worker_) worker_->drain();
  } catch (...) {
  }
  worker_.reset();
  int finalized = 0;
  if (comm_ != nullptr && rt_.api().fa_mpi_finalized(&finalized) == 0 && !finalized) {
    rt_.api().fa_mpi_comm_free(comm_);  // collective; errors here have nowhere to go
  }
}

void MpiCommunicator::drain() {
  if (worker_) worker_->drain();
}

void MpiCommunicator::reduce_now(void* data, int64_t n, DType dtype) {
  const int dt = mpi_dtype(dtype, where());
  char* p = static_cast<char*>(data);
  const size_t esize = dtype_size(dtype);
  for (int64_t off = 0; off < n; off += kMaxChunk) {
    const int count = static_cast<int>(std::min(kMaxChunk, n - off));
    fa_mpi_request* req = nullptr;
    rt_.check(rt_.api().fa_mpi_iallreduce_sum(comm_, p + off * esize, count, dt, &req),
              "MPI_Iallreduce");
    rt_.wait(req, "all_reduce_sum");
  }
}

void MpiCommunicator::all_reduce_sum(const Context& ctx, Tensor& buf) {
  (void)ctx;
  check_buffer(buf, "all_reduce_sum", "buf");
  mpi_dtype(buf.dtype(), where());
  drain();
  reduce_now(buf.data(), buf.numel(), buf.dtype());
}

std::unique_ptr<CommRequest> MpiCommunicator::all_reduce_sum_async(const Context& ctx,
                                                                   Tensor& buf) {
  check_buffer(buf, "all_reduce_sum_async", "buf");
  mpi_dtype(buf.dtype(), where());
  if (!worker_) {
    all_reduce_sum(ctx, buf);
    return std::make_unique<comm::DoneRequest>();
  }
  void* data = buf.data();
  const int64_t n = buf.numel();
  const DType dt = buf.dtype();
  auto op = worker_->submit([this, data, n, dt] { reduce_now(data, n, dt); });
  return std::make_unique<comm::WorkerRequest>(*worker_, std::move(op));
}

void MpiCommunicator::all_gather(const Context& ctx, const Tensor& in, Tensor& out) {
  check_buffer(in, "all_gather", "in");
  check_buffer(out, "all_gather", "out");
  FA_CHECK(in.dtype() == out.dtype(), where(), ": all_gather: in is ", in.describe(),
           " but out is ", out.describe(), " (dtypes differ)");
  FA_CHECK(out.numel() == in.numel() * size_, where(), ": all_gather: out ", out.describe(),
           " must hold ", size_, " x ", in.numel(), " elements");
  const int64_t bytes = static_cast<int64_t>(in.nbytes());
  FA_CHECK(bytes <= kMaxChunk, where(), ": all_gather: ", bytes,
           " bytes per rank exceed the MPI backend's limit of 2^31 - 1; gather in pieces");
  (void)ctx;
  drain();
  if (bytes == 0) return;
  fa_mpi_request* req = nullptr;
  rt_.check(
      rt_.api().fa_mpi_iallgather(comm_, in.data(), out.data(), static_cast<int>(bytes), &req),
      "MPI_Iallgather");
  rt_.wait(req, "all_gather");
}

void MpiCommunicator::broadcast_bytes(void* data, int64_t nbytes, int root) {
  FA_CHECK(root >= 0 && root < size_, where(), ": broadcast: root ", root, " out of range");
  drain();
  char* p = static_cast<char*>(data);
  for (int64_t off = 0; off < nbytes; off += kMaxChunk) {
    const int count = static_cast<int>(std::min(kMaxChunk, nbytes - off));
    fa_mpi_request* req = nullptr;
    rt_.check(rt_.api().fa_mpi_ibcast(comm_, p + off, count, root, &req), "MPI_Ibcast");
    rt_.wait(req, "broadcast");
  }
}

void MpiCommunicator::broadcast(const Context& ctx, Tensor& buf, int root) {
  (void)ctx;
  check_buffer(buf, "broadcast", "buf");
  broadcast_bytes(buf.data(), static_cast<int64_t>(buf.nbytes()), root);
}

void MpiCommunicator::barrier() {
  drain();
  fa_mpi_request* req = nullptr;
  rt_.check(rt_.api().fa_mpi_ibarrier(comm_, &req), "MPI_Ibarrier");
  rt_.wait(req, "barrier");
}

std::vector<int64_t> MpiCommunicator::all_reduce_max(const std::vector<int64_t>& values) {
  std::vector<int64_t> out = values;
  drain();
  if (out.empty()) return out;
  fa_mpi_request* req = nullptr;
  rt_.check(
      rt_.api().fa_mpi_iallreduce_max_int64(comm_, out.data(), static_cast<int>(out.size()), &req),
      "MPI_Iallreduce(MAX)");
  rt_.wait(req, "all_reduce_max");
  return out;
}

}  // namespace fastattn::comm
