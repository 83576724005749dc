#include "fastattn/kernels/cuda/device_props.h"

#include <cuda_runtime.h>

#include <map>
#include <mutex>

#include "fastattn/core/cuda/cuda_check.h"

namespace fastattn::kernels::cuda {

DeviceProps device_props(int device) {
  static std::mutex mu;
  static std::map<int, DeviceProps> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(device);
  if (it != cache.end()) return it->second;
  DeviceProps d;
  int major = 0, minor = 0;
  FA_CUDA_CHECK(cudaDeviceGetAttribute(&d.sms, cudaDevAttrMultiProcessorCount, device));
  FA_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  FA_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device));
  d.cc = major * 10 + minor;
  cache[device] = d;
  return d;
}

}  // namespace fastattn::kernels::cuda
