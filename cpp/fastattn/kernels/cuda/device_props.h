// The few properties of a GPU the kernels' host code chooses by, read once per device.
#pragma once

namespace fastattn::kernels::cuda {

struct DeviceProps {
  int sms = 0;  // streaming multiprocessors
  int cc = 0;   // compute capability, e.g. 90
};

// Cached per device (thread-safe); throws fastattn::Error for a CUDA error.
DeviceProps device_props(int device);

}  // namespace fastattn::kernels::cuda
