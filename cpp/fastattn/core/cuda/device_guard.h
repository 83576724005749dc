// Makes `device` current for a scope and restores the previous one (CUDA builds only).
#pragma once

#include <cuda_runtime.h>

#include "fastattn/core/cuda/cuda_check.h"

namespace fastattn {

class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    FA_CUDA_CHECK(cudaGetDevice(&prev_));
    if (prev_ != device) FA_CUDA_CHECK(cudaSetDevice(device));
  }
  ~DeviceGuard() { cudaSetDevice(prev_); }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int prev_ = 0;
};

}  // namespace fastattn
