// The few CUDA runtime services a GPU session needs (CUDA builds only; defined in cuda/).
#pragma once

#if defined(FASTATTN_WITH_CUDA)
#include <cstddef>
#include <string>

namespace fastattn::runtime::gpu {

struct DeviceInfo {
  std::string name;
  int compute_capability = 0;  // e.g. 90
  size_t total_bytes = 0;
  size_t free_bytes = 0;
};

// CUDA devices visible (0 when there is no driver or no GPU).
int device_count();

// Checks the device exists (InvalidArgument naming it and the count otherwise), makes it the
// calling thread's current device and describes it.
DeviceInfo use_device(int device);
// Free / total bytes of the current device now.
DeviceInfo current_device_memory();

// A non-blocking stream on the current device, owned by the holder.
class Stream {
 public:
  Stream();
  ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  void* get() const { return stream_; }

 private:
  void* stream_ = nullptr;
};

}  // namespace fastattn::runtime::gpu
#endif
