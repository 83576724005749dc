#pragma once

#include <string>

namespace fastattn {

enum class DeviceType : int {
  kCPU = 0,
  kCUDA = 1,
  kCUDAHost = 2,  // pinned host memory: CPU-addressable, fast to copy to a GPU
};

struct Device {
  DeviceType type = DeviceType::kCPU;
  int index = 0;

  bool is_cpu_addressable() const { return type != DeviceType::kCUDA; }
  bool operator==(const Device& o) const { return type == o.type && index == o.index; }
  bool operator!=(const Device& o) const { return !(*this == o); }
  std::string str() const;
};

// Parses "cpu", "cuda", "cuda:N". Throws InvalidArgument naming the option otherwise.
Device parse_device(const std::string& s);

}  // namespace fastattn
