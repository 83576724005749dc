#include "fastattn/kernels/cuda/cublas_handle.h"

#include <cuda_runtime.h>

#include <vector>

#include "fastattn/core/error.h"

namespace fastattn::kernels::cuda {
namespace {

// This thread's handles, one per device, destroyed with the thread.
class ThreadHandles {
 public:
  ThreadHandles() = default;
  ThreadHandles(const ThreadHandles&) = delete;
  ThreadHandles& operator=(const ThreadHandles&) = delete;
  ~ThreadHandles() {
    for (cublasHandle_t h : handles_) {
      if (h != nullptr) cublasDestroy(h);  // errors at process exit are of no use to anyone
    }
  }
  cublasHandle_t get(int device) {
    FA_CHECK(device >= 0, "cuBLAS: invalid device index ", device);
    if (handles_.size() <= static_cast<size_t>(device)) handles_.resize(device + 1, nullptr);
    cublasHandle_t& h = handles_[device];
    if (h == nullptr) {
      cublasHandle_t created = nullptr;
      FA_CUBLAS_CHECK(cublasCreate(&created));
      const cublasStatus_t st = cublasSetMathMode(
          created, static_cast<cublasMath_t>(CUBLAS_DEFAULT_MATH |
                                             CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION));
      if (st != CUBLAS_STATUS_SUCCESS) {
        cublasDestroy(created);
        throw_cublas_error(st, "cublasSetMathMode", __FILE__, __LINE__);
      }
      h = created;
    }
    return h;
  }

 private:
  std::vector<cublasHandle_t> handles_;
};

}  // namespace

void throw_cublas_error(cublasStatus_t status, const char* what, const char* file, int line) {
  FA_THROW_AS(Error, "cuBLAS error ", static_cast<int>(status), " (", cublasGetStatusString(status),
              ") from ", what, " at ", file, ":", line);
}

cublasHandle_t cublas_handle(const Context& ctx, int device) {
  cublasHandle_t h = static_cast<cublasHandle_t>(ctx.blas_handle);
  if (h == nullptr) {
    thread_local ThreadHandles handles;
    h = handles.get(device);
  }
  FA_CUBLAS_CHECK(cublasSetStream(h, static_cast<cudaStream_t>(ctx.stream)));
  return h;
}

SmCountTarget::SmCountTarget(cublasHandle_t handle, int sm_count) : handle_(handle) {
  if (sm_count <= 0) return;
  FA_CUBLAS_CHECK(cublasGetSmCountTarget(handle_, &previous_));
  FA_CUBLAS_CHECK(cublasSetSmCountTarget(handle_, sm_count));
  set_ = true;
}

SmCountTarget::~SmCountTarget() {
  if (set_) cublasSetSmCountTarget(handle_, previous_);  // a destructor must not throw
}

}  // namespace fastattn::kernels::cuda
